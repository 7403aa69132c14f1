// The courier app's web build in headless Chromium, driven like a courier by
// a Rust test (tests/tests/courier_web.rs) that watches the server.
//
//   node courier.mjs URL OUT_DIR USER PASSWORD NOTE_PHOTO
//
// Logs in, goes on duty, prints READY once the day lists its stop; waits for
// the order the test then assigns to appear with a notice (NOTICED); opens the
// first stop, picks it up (with the confirmation), looks at the map, delivers:
// draws a signature on the pad, attaches the photo of the signed delivery
// note, confirms; prints SIGNED once the order is listed as signed. Then picks
// up the second order and reports it damaged (REPORTED).
//
// Screenshots go to OUT_DIR. Exit 0 when everything was seen.
import { drawSignature, finish, launch, phonePage } from './browser.mjs';

const [url, out, user, password, notePhoto] = process.argv.slice(2);
const browser = await launch();
const failures = [];
try {
  const page = await phonePage(browser, failures);
  const shot = (name) => page.screenshot({ path: `${out}/courier-${name}.png`, fullPage: true });
  const text = async (selector) => (await page.locator(selector).first().textContent()).trim();

  await page.goto(url);
  await page.waitForSelector('#xl-login', { timeout: 30000 });
  await page.fill('#xl-username', user);
  await page.fill('#xl-password', password);
  await shot('login');
  await page.click('#xl-login');
  await page.waitForSelector('#xl-stops li', { timeout: 20000 });
  if (await page.locator('#xl-tracking').count()) failures.push('on duty before going on duty');
  await page.click('#xl-duty');
  await page.waitForSelector('#xl-tracking', { timeout: 10000 });
  console.log('READY');

  // The office assigns another order: it appears live, with a notice.
  await page.waitForSelector('#xl-notices', { timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll('#xl-stops li').length === 2, null, { timeout: 20000 });
  await shot('today');
  console.log('NOTICED');
  await page.click('#xl-dismiss');

  // The first stop: picked up, with a confirmation.
  await page.locator('#xl-stops li').first().click();
  await page.waitForSelector('#xl-act-PickUp', { timeout: 10000 });
  await shot('stop');
  await page.click('#xl-act-PickUp');
  await page.waitForSelector('#xl-confirm-box', { timeout: 5000 });
  await page.click('#xl-yes');
  await page.waitForFunction(() => document.querySelector('#xl-status')?.textContent.includes('配送中'), null, { timeout: 10000 });
  await page.waitForSelector('#xl-act-Deliver', { timeout: 10000 });

  // The map of the day.
  await page.click('#xl-back');
  await page.click('#xl-tab-map');
  await page.waitForSelector('.xl-map svg', { timeout: 10000 });
  await page.waitForFunction(() => document.querySelectorAll('.xl-map-roads polyline').length > 10, null, { timeout: 15000 });
  await shot('map');
  await page.click('#xl-tab-today');

  // Deliver: the customer signs on the screen; the signed paper note is photographed.
  await page.locator('#xl-stops li').first().click();
  await page.click('#xl-act-Deliver');
  await page.waitForSelector('#xl-pad', { timeout: 10000 });
  await drawSignature(page);
  await page.setInputFiles('#xl-note-photo', notePhoto);
  await page.waitForFunction(() => document.querySelector('.xl-photo')?.textContent.includes('✓'), null, { timeout: 10000 });
  await shot('deliver');
  await page.waitForFunction(() => !document.querySelector('#xl-confirm')?.disabled, null, { timeout: 5000 });
  await page.click('#xl-confirm');
  await page.waitForFunction(
    () => [...document.querySelectorAll('#xl-done li')].some((li) => li.textContent.includes('已签收')),
    null, { timeout: 20000 });
  await page.waitForFunction(() => !document.querySelector('#xl-waiting') && !document.querySelector('#xl-offline'), null, { timeout: 20000 });
  await shot('signed');
  console.log('SIGNED');

  // The second order: picked up, then reported damaged.
  await page.locator('#xl-stops li').first().click();
  await page.click('#xl-act-PickUp');
  await page.click('#xl-yes');
  await page.waitForSelector('#xl-act-Report', { timeout: 10000 });
  await page.click('#xl-act-Report');
  await page.click('#xl-reason-GoodsDamaged');
  await page.fill('#xl-report-note', '箱子压坏');
  await shot('report');
  await page.click('#xl-report-send');
  await page.waitForFunction(
    () => [...document.querySelectorAll('#xl-stops li')].some((li) => li.textContent.includes('异常处理中')),
    null, { timeout: 20000 });
  await page.waitForFunction(() => !document.querySelector('#xl-waiting'), null, { timeout: 20000 });
  await shot('reported');
  // English on request.
  await page.click('#xl-lang');
  await page.waitForFunction(() => document.body.textContent.includes('Exception being handled'), null, { timeout: 5000 });
  console.log('REPORTED');
  const attention = await page.locator('#xl-attention').count();
  if (attention) failures.push(`changes need attention: ${await text('#xl-attention')}`);
} catch (e) {
  failures.push(String(e));
} finally {
  await browser.close();
}
finish(failures);

// The customer's tracking page in headless Chromium, driven by a Rust test
// (tests/tests/customer_web.rs) that changes the order on the server while
// this watches.
//
//   node customer.mjs live URL OUT_DIR     a live order: prints READY once it shows
//                                          "配送中" with the courier on the map, MOVED
//                                          when the marker moves with new positions, then
//                                          signs on the page (HASH <digest>) and sees
//                                          "已签收" pushed live
//   node customer.mjs expired URL OUT_DIR  an expired link says so
//   node customer.mjs tampered URL OUT_DIR a link that was never made says the order is not found
//   node customer.mjs signoff URL OUT_DIR USER PASSWORD
//                                          the app without a link: log in, open the order
//                                          out for delivery, refuse 500 g as damaged, sign
//                                          on the pad, confirm, check the receipt; prints
//                                          HASH <the receipt's signature hash>; then raises
//                                          an after-sales matter for 300 g
//
// Screenshots go to OUT_DIR. Exit 0 when everything was seen.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { drawSignature, finish, launch, phonePage } from './browser.mjs';

const [mode, url, out, user, password] = process.argv.slice(2);
const browser = await launch();
const failures = [];

// Signs on the sign-off screen's pad with mouse strokes, confirms, and
// returns the receipt's signature hash.
async function signOnThePad(page, shot, name) {
  await drawSignature(page);
  await shot(name);
  await page.waitForFunction(() => !document.querySelector('#xl-confirm')?.disabled, null, { timeout: 5000 });
  await page.click('#xl-confirm');
  await page.waitForSelector('#xl-receipt-hash', { timeout: 20000 });
  return (await page.locator('#xl-receipt-hash').textContent()).trim();
}

// A small photo (a 24×16 PNG of yellowish leaves) to attach, written to `path`.
function pngFile(path) {
  const w = 24, h = 16;
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (w * 3 + 1)] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = 200 + (x % 4) * 10; raw[o + 1] = 190 - (y % 3) * 20; raw[o + 2] = 40;
    }
  }
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
  fs.writeFileSync(path, png);
  return path;
}
try {
  const page = await phonePage(browser, failures);
  const shot = (name) => page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
  await page.goto(url);
  if (mode === 'signoff') {
    await page.waitForSelector('#xl-login', { timeout: 20000 });
    await page.fill('#xl-username', user);
    await page.fill('#xl-password', password);
    await shot('customer-app-login');
    await page.click('#xl-login');
    await page.waitForSelector('#xl-orders li', { timeout: 20000 });
    await shot('customer-app-orders');
    await page.locator('#xl-orders li', { hasText: '配送中' }).first().click();
    await page.waitForSelector('#xl-sign', { timeout: 20000 });
    await page.click('#xl-sign');
    await page.waitForSelector('#xl-pad', { timeout: 20000 });
    await page.locator('.xl-line-check input').first().fill('500');
    await page.locator('.xl-line-check select').first().selectOption('1');
    const hash = await signOnThePad(page, shot, 'customer-app-sign-off');
    await page.click('#xl-verify');
    await page.waitForSelector('#xl-verified', { timeout: 20000 });
    await shot('customer-app-receipt');
    console.log(`HASH ${hash}`);
    // Later: 300 g of it turns out bad, an after-sales matter.
    await page.click('#xl-receipt-done');
    await page.locator('#xl-orders li', { hasText: '已签收' }).first().click();
    await page.waitForSelector('#xl-after-sales', { timeout: 20000 });
    await page.click('#xl-after-sales');
    await page.waitForSelector('.xl-as-amount', { timeout: 20000 });
    await page.locator('.xl-as-amount').first().fill('300');
    await page.fill('#xl-as-note', '菜叶发黄');
    await page.setInputFiles('#xl-as-photo', pngFile(`${out}/yellow-leaves.png`));
    await page.waitForFunction(() => document.body.textContent.includes('(1)'), null, { timeout: 5000 });
    await page.click('#xl-as-submit');
    await page.waitForSelector('#xl-as-sent', { timeout: 20000 });
    await page.waitForSelector('#xl-matters li', { timeout: 5000 });
    await shot('customer-app-after-sales');
  } else if (mode === 'expired') {
    await page.waitForSelector('#xl-expired', { timeout: 20000 });
    await shot('customer-link-expired');
  } else if (mode === 'tampered') {
    await page.waitForSelector('#xl-not-found', { timeout: 20000 });
    const text = await page.locator('main').textContent();
    if (/KL\d|138/.test(text)) failures.push(`the page leaks: ${text}`);
    await shot('customer-link-tampered');
  } else {
    await page.waitForFunction(
      () => document.querySelector('#xl-status')?.textContent === '配送中', null, { timeout: 20000 });
    await page.waitForSelector('#xl-map-courier', { timeout: 10000 });
    await page.waitForFunction(() => document.querySelectorAll('.xl-map-roads polyline').length >= 10, null,
      { timeout: 10000 }).catch(() => {});
    const roads = await page.locator('.xl-map-roads polyline').count();
    const credit = await page.locator('.xl-map-credit').textContent().catch(() => '');
    const items = await page.locator('.xl-items li').count();
    const trail = await page.locator('.xl-map-trail').count();
    if (trail < 1) failures.push('no trail on the map');
    if (items < 1) failures.push('no items listed');
    if (roads < 10) failures.push(`the map drew ${roads} roads`);
    console.log(JSON.stringify({ roads, credit, items, trail }));
    await shot('customer-delivering');
    const where = () => page.evaluate(() => {
      const c = document.querySelector('#xl-map-courier');
      return `${c?.getAttribute('cx')},${c?.getAttribute('cy')}`;
    });
    const before = await where();
    console.log('READY');
    // The courier drives on: the marker moves as positions arrive.
    await page.waitForFunction((b) => {
      const c = document.querySelector('#xl-map-courier');
      return c && `${c.getAttribute('cx')},${c.getAttribute('cy')}` !== b;
    }, before, { timeout: 20000 });
    await page.waitForSelector('.xl-map-route', { timeout: 10000 })
      .catch(() => failures.push('no route drawn from the courier to the door'));
    await shot('customer-courier-moved');
    console.log('MOVED');
    // At the door, the customer signs on this page with the mouse.
    await page.click('#xl-sign');
    await page.waitForSelector('#xl-pad', { timeout: 20000 });
    const hash = await signOnThePad(page, shot, 'customer-link-sign');
    console.log(`HASH ${hash}`);
    await page.click('#xl-verify');
    await page.waitForSelector('#xl-verified', { timeout: 20000 });
    await shot('customer-link-receipt');
    await page.click('#xl-receipt-done');
    await page.waitForFunction(
      () => document.querySelector('#xl-status')?.textContent === '已签收', null, { timeout: 30000 });
    const kinds = await page.locator('#xl-timeline li').evaluateAll((li) => li.map((l) => l.dataset.kind));
    if (!kinds.includes('SIGNED')) failures.push(`timeline without SIGNED: ${kinds}`);
    await shot('customer-signed');
    await page.click('#xl-lang');
    await page.waitForFunction(() => document.querySelector('#xl-status')?.textContent === 'Signed', null, { timeout: 5000 });
    await shot('customer-signed-en');
  }
} catch (e) {
  failures.push(String(e));
} finally {
  await browser.close();
}
finish(failures);
console.log('OK');

// What every browser script here shares: Debian's Chromium, headless, and a
// phone-sized page that records the page's own errors.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
}

// A phone-sized page in China's time zone; page errors go to `failures`.
export async function phonePage(browser, failures) {
  const page = await browser.newPage({
    viewport: { width: 412, height: 860 }, deviceScaleFactor: 2, locale: 'zh-CN', timezoneId: 'Asia/Shanghai',
  });
  page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
  return page;
}

// Prints what went wrong and exits 1, or exits 0.
export function finish(failures) {
  if (failures.length) {
    console.error(failures.join('\n'));
    process.exit(1);
  }
}

// Signs on the drawing pad (#xl-pad) with a mouse stroke, as a finger would.
export async function drawSignature(page) {
  const pad = await page.locator('#xl-pad').boundingBox();
  await page.mouse.move(pad.x + 30, pad.y + pad.height * 0.7);
  await page.mouse.down();
  for (let i = 1; i <= 24; i++) {
    await page.mouse.move(pad.x + 30 + i * (pad.width - 60) / 24, pad.y + pad.height * (0.5 + 0.3 * Math.sin(i / 2)));
  }
  await page.mouse.up();
}

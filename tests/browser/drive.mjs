// Opens a page in headless Chromium, waits for craft.js to finish a run, and prints its result as
// JSON (window.craftResult); with a second argument also saves a screenshot there.
//   node tests/browser/drive.mjs URL [screenshot.png]
// playwright-core comes from craft/web's pinned packages and drives the system's Chromium
// ($CHROMIUM, default /usr/bin/chromium): nothing is downloaded.
import { createRequire } from "node:module";
const require = createRequire(new URL("../../craft/web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, { timeout: 240_000 });
  const result = await page.evaluate(() => ({ ...window.craftResult, status: document.getElementById("status").textContent }));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...result, logs }));
} finally {
  await browser.close();
}

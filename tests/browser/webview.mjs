// Drives the gateway's web view in headless Chromium (Debian's) with
// puppeteer-core, for tests/gateway.rs:
//
//   node tests/browser/webview.mjs URL TOKEN NODE_DIR SCREENSHOT
//
// Opens the page (the token in the address's fragment, as scripts/demo
// prints it), prints "ready", then waits (up to 150 s) until the page shows
// a live stream, has shown at least two different mouth crops of it, and
// shows its final; prints one JSON line of what it saw and saves a
// screenshot. Exit status 1 with the page's state when it does not.
import { createRequire } from "node:module";

const [url, token, nodeDir, screenshot] = process.argv.slice(2);
const require = createRequire(nodeDir + "/package.json");
const puppeteer = require("puppeteer-core");

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--window-size=1100,720"],
  defaultViewport: { width: 1100, height: 720 },
});
const problems = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
  // Network errors of the event feed are expected when a stream ends.
  await page.goto(url + "/#token=" + encodeURIComponent(token), { waitUntil: "load" });
  console.log("ready");

  const crops = new Set();
  const deadline = Date.now() + 150_000;
  let seen = null;
  while (Date.now() < deadline) {
    seen = await page.evaluate(() => {
      const img = document.getElementById("mouth");
      return {
        streams: [...document.querySelectorAll("#streams li[data-id]")].map((li) => li.dataset.id),
        selected: document.getElementById("stream-title").textContent,
        crop_frame: img.dataset.frame || null,
        crop_loaded: img.complete && img.naturalWidth > 0,
        crop_size: [img.naturalWidth, img.naturalHeight],
        final: document.getElementById("transcript").classList.contains("final"),
        text: document.getElementById("transcript").textContent.trim(),
        state: document.getElementById("state").textContent,
        model: document.getElementById("model").textContent,
        latency: document.getElementById("latency").textContent,
      };
    });
    if (seen.crop_loaded && seen.crop_frame) crops.add(seen.crop_frame);
    if (seen.final && crops.size >= 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  seen.crops_seen = crops.size;
  seen.problems = problems;
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log(JSON.stringify(seen));
  process.exitCode = seen.final && crops.size >= 2 ? 0 : 1;
} finally {
  await browser.close();
}

"""Server memory per held upload: one browser session uploads N large JPEGs (2500x2500) on Try an
image, one at a time, then changes page and closes; prints the Streamlit server's RSS after each
step and 10 s and 150 s after the tab closed (Streamlit keeps a disconnected session 120 s).

    python benchmarks/upload_memory.py --uploads 6

Uses the bottle model in ``models/`` (see benchmarks/dashboard_load.py) and Debian's chromium.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_load as dl  # noqa: E402


async def main(args) -> None:
    from playwright.async_api import async_playwright

    tmp = Path(tempfile.mkdtemp())
    jpegs = dl.make_jpegs(args.data_dir, args.category, tmp, args.uploads, 2500)
    proc, url = dl.start_server(args.models_dir, args.data_dir, tmp / "server.log")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=dl.CHROMIUM, headless=True, args=dl.ARGS)
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1800})
            page = await ctx.new_page()
            page.set_default_timeout(300_000)
            await page.goto(f"{url}/try_an_image")
            chooser = page.locator("[data-testid='stFileUploaderDropzoneInput']")
            await chooser.wait_for(state="attached")
            await asyncio.sleep(3)
            start = dl.rss_mb(proc.pid)
            print(f"start: {start:.0f} MB", flush=True)
            for i, jpeg in enumerate(jpegs):
                t0 = time.time()
                await chooser.set_input_files(str(jpeg))
                await page.get_by_text(" → ").nth(i).wait_for()
                await asyncio.sleep(2)
                print(f"{i + 1} held ({jpeg.stat().st_size / 1e6:.1f} MB JPEG, {time.time() - t0:.0f} s): "
                      f"{dl.rss_mb(proc.pid):.0f} MB", flush=True)
            await page.get_by_role("link", name="SOM explorer").first.click()
            await asyncio.sleep(10)
            print(f"after a page change: {dl.rss_mb(proc.pid):.0f} MB", flush=True)
            await ctx.close()
            await browser.close()
        for wait in (10, 140):
            time.sleep(wait)
            print(f"tab closed + {wait if wait == 10 else 150} s: {dl.rss_mb(proc.pid):.0f} MB", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=dl.REPO.parent / "shared" / "data" / "mvtec_ad")
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--models-dir", type=Path, default=dl.REPO / "models")
    ap.add_argument("--uploads", type=int, default=6)
    args = ap.parse_args()
    import os

    print(f"load average {os.getloadavg()}", flush=True)
    asyncio.run(main(args))
    print(f"load average {os.getloadavg()}", flush=True)

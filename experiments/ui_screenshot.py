"""A screenshot of an experiment's runs page in the MLflow UI, every parent run expanded so its
nested steps show (the README's docs/mlflow-runs.png).

    mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5123 &
    pip install websocket-client        # the DevTools connection; not a dependency of medrobust
    python experiments/ui_screenshot.py "http://127.0.0.1:5123/#/experiments/1/runs" docs/mlflow-runs.png

Drives Debian's headless Chromium over the DevTools protocol: open the page, click each run's
expand button and close the assistant panel, wait, capture.
"""

import base64
import json
import subprocess
import sys
import time
import urllib.request

import websocket

EXPAND = """(() => {
  const buttons = document.querySelectorAll('button[data-component-id*=runnamecellrenderer]');
  buttons.forEach(b => b.click());
  document.querySelectorAll('button[data-component-id="mlflow.assistant.chat_panel.close"]').forEach(b => b.click());
  return buttons.length; })()"""


def screenshot(url, out, port=9333, size="1400,820", settle=8.0):
    chrome = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--window-size={size}", f"--remote-debugging-port={port}", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                break
            except OSError:
                time.sleep(0.2)
        page = next(t for t in tabs if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True)
        counter = iter(range(1, 1 << 30))

        def call(method, **params):
            ident = next(counter)
            ws.send(json.dumps({"id": ident, "method": method, "params": params}))
            while True:
                message = json.loads(ws.recv())
                if message.get("id") == ident:
                    return message.get("result", {})

        call("Page.enable")
        call("Page.navigate", url=url)
        time.sleep(settle)
        expanded = call("Runtime.evaluate", expression=EXPAND, returnByValue=True)["result"]["value"]
        time.sleep(3)
        with open(out, "wb") as f:
            f.write(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
        return expanded
    finally:
        chrome.kill()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python experiments/ui_screenshot.py <runs page URL> <out.png>")
    print(f"{screenshot(sys.argv[1], sys.argv[2])} parent run(s) expanded; wrote {sys.argv[2]}")

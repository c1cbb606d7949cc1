//! A real browser for tests: headless Chromium driven over the DevTools protocol (a websocket),
//! to load a page, evaluate JavaScript in it and take screenshots.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// Debian's `chromium` (installed by `scripts/test.sh`).
pub const CHROMIUM: &str = "chromium";

#[derive(Debug)]
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium and opens `url` in a new tab.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting chromium (scripts/test.sh installs Debian's chromium)")?;
        // Chromium prints the DevTools address on stderr; keep draining it afterwards so a full
        // pipe never blocks the browser.
        let stderr = child.stderr.take().context("chromium stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                    sent = true;
                }
            }
        });
        let ws_url = rx
            .recv_timeout(Duration::from_secs(30))
            .context("chromium did not print its DevTools address within 30 s")?;
        let (ws, _) = tungstenite::connect(ws_url.as_str()).context("DevTools websocket")?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            // A browser that stops answering fails the call instead of hanging the test.
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
        }
        let mut b = Self {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", serde_json::json!({ "url": url }))?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target_id, "flatten": true }),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        Ok(b)
    }

    /// Sends a DevTools command (to the page once attached) and waits for its result.
    pub fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws.send(Message::text(msg.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Message::Text(text) = msg else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
        bail!("{method}: no reply within 30 s")
    }

    /// Evaluates a JavaScript expression in the page; its value as JSON.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<serde_json::Value> {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` until it is `true`; the time it took.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.eval(expression)? == serde_json::Value::Bool(true) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("not true within {timeout:?}: {expression}")
    }

    /// A PNG of the page as it is now.
    pub fn screenshot(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("screenshot data")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A headless Chromium driven over WebDriver: `chromedriver` from the distribution's packages,
//! spoken to with plain HTTP calls (the W3C protocol, a handful of commands) on the reqwest
//! the tests already have. Chromium and chromedriver must be installed (`.ci/run` installs
//! Debian's `chromium` and `chromium-driver`): without them a browser test fails saying so,
//! it never passes unseen.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::wait_for;

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Where the tests' screenshots go: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh
    /// profile, started as this machine's notes say (no background networking, no sandbox:
    /// CI runs as root).
    pub fn start() -> Browser {
        let missing = "the browser tests need Chromium and ChromeDriver: install them with \
                       `apt-get install -y chromium chromium-driver` (as .ci/run does)";
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("no chromium on PATH: {missing}"));
        let chromedriver = on_path(&["chromedriver"])
            .unwrap_or_else(|| panic!("no chromedriver on PATH: {missing}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let profile = tempfile::Builder::new()
            .prefix("execrelay-chromium-")
            .tempdir()
            .expect("tempdir");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: reqwest::Client::new(),
            rt,
            _profile: profile,
        };
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let status = browser.try_call("GET", "/status", None).ok()?;
            (status["ready"] == true).then_some(())
        });
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser.call("POST", "/session", Some(caps));
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_string();
        browser
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, url)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.rt.block_on(async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let ok = resp.status().is_success();
            let body: Value = resp.json().await.map_err(|e| e.to_string())?;
            if ok {
                Ok(body["value"].clone())
            } else {
                Err(body.to_string())
            }
        })
    }

    #[track_caller]
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    #[track_caller]
    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script`, which calls `arguments[arguments.length - 1]` with its answer.
    pub fn run_async(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    #[track_caller]
    fn element(&self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Clicks the element `css` selects, as a user would. The console redraws its tables
    /// every 2 s: an element replaced between finding and clicking is found again.
    pub fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let id = self.element(css);
            let path = format!("/session/{}/element/{id}/click", self.session);
            match self.try_call("POST", &path, Some(json!({}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && tries < 5 => tries += 1,
                Err(e) => panic!("WebDriver click on {css}: {e}"),
            }
        }
    }

    /// The text of the element `css` selects, or "" while there is none.
    pub fn text(&self, css: &str) -> String {
        self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits (bounded) until the text of `css` satisfies `pred`; returns it.
    #[track_caller]
    pub fn wait_text(&self, what: &str, css: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(
            &format!("the console to show {what} ({css})"),
            Duration::from_secs(20),
            || {
                let text = self.text(css);
                pred(&text).then_some(text)
            },
        )
    }

    /// The browser's console messages since the last call, as `LEVEL message`.
    pub fn console_log(&self) -> Vec<String> {
        let entries = self.session_call("POST", "/se/log", Some(json!({"type": "browser"})));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG of the element `css` selects (the whole page for `None`) as
    /// `target/console-screenshots/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str, css: Option<&str>) -> PathBuf {
        let data = match css {
            Some(css) => {
                let id = self.element(css);
                self.session_call("GET", &format!("/element/{id}/screenshot"), None)
            }
            None => self.session_call("GET", "/screenshot", None),
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("decode the screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

//! A real browser for the console's tests: Debian's Chromium, headless, driven through its
//! chromedriver (WebDriver) by fantoccini. Each `Browser` is its own chromedriver, profile
//! and window; calls block, so tests read like the other end-to-end tests.

use crate::util::{Daemon, free_port, require, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A headless Chromium, closed (with its chromedriver) when dropped.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Daemon,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a Chromium window of `width` x `height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        require("chromium");
        require("chromedriver");
        let port = free_port();
        let profile = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        wait_for("chromedriver", &mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let driver = Daemon(child);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                // The real binary: /usr/bin/chromium is Debian's wrapper script.
                "binary": chromium_binary(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--no-first-run",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let client = runtime
            .block_on(async {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
            })
            .expect("a Chromium session");
        Browser {
            runtime,
            client: Some(client),
            _driver: driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Opens `url` and waits for the page.
    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The address of the page shown.
    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .expect("current url")
            .to_string()
    }

    /// Types `text` into the field `selector` (after clearing it).
    pub fn fill(&self, selector: &str, text: &str) {
        self.runtime
            .block_on(async {
                let field = self.client().find(Locator::Css(selector)).await?;
                field.clear().await?;
                field.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("fill {selector}: {e}"));
    }

    /// Clicks the link or button `selector` and waits for the page it leads to.
    pub fn click(&self, selector: &str) {
        // A mark on this document: the next page is loaded once it is gone.
        self.run("window.portcullisOldPage = true; return null;");
        self.click_in_page(selector);
        self.wait_until(&format!("the page after clicking {selector}"), |b| {
            b.run("return window.portcullisOldPage === undefined && document.readyState === 'complete';")
                == serde_json::Value::Bool(true)
        });
    }

    /// Clicks an element that changes the page in place (a checkbox): no page to wait for.
    pub fn click_in_page(&self, selector: &str) {
        self.runtime
            .block_on(async {
                self.client()
                    .find(Locator::Css(selector))
                    .await?
                    .click()
                    .await
            })
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// The visible text of the first element `selector`, if there is one.
    pub fn text(&self, selector: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(selector)).await.ok()?;
            element.text().await.ok()
        })
    }

    /// The visible texts of every element `selector`.
    pub fn texts(&self, selector: &str) -> Vec<String> {
        self.runtime
            .block_on(async {
                let mut texts = Vec::new();
                for element in self.client().find_all(Locator::Css(selector)).await? {
                    texts.push(element.text().await?);
                }
                Ok::<_, fantoccini::error::CmdError>(texts)
            })
            .unwrap_or_else(|e| panic!("read {selector}: {e}"))
    }

    /// An attribute of the first element `selector`.
    pub fn attribute(&self, selector: &str, name: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(selector)).await.ok()?;
            element.attr(name).await.ok().flatten()
        })
    }

    /// Runs `script` in the page and returns its result.
    pub fn run(&self, script: &str) -> serde_json::Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Runs `script` in the page; it ends by calling `done(result)` (its last argument),
    /// whose result is returned.
    pub fn run_async(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{script}");
        self.runtime
            .block_on(self.client().execute_async(&script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// A cookie's value, HttpOnly ones included.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.runtime
            .block_on(self.client().get_named_cookie(name))
            .ok()
            .map(|c| c.value().to_string())
    }

    /// Replaces a cookie's value (on the page's origin, path `/ui`).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.runtime
            .block_on(async {
                let _ = self.client().delete_cookie(name).await;
                let mut cookie =
                    fantoccini::cookies::Cookie::new(name.to_string(), value.to_string());
                cookie.set_path("/ui");
                cookie.set_domain("127.0.0.1");
                cookie.set_same_site(cookie::SameSite::Lax);
                self.client().add_cookie(cookie).await
            })
            .unwrap_or_else(|e| panic!("set cookie {name}: {e}"));
    }

    /// Resizes the window (CSS pixels).
    pub fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .expect("resize");
    }

    /// The window's size (CSS pixels).
    pub fn size(&self) -> (u32, u32) {
        let (width, height) = self
            .runtime
            .block_on(self.client().get_window_size())
            .expect("window size");
        (width as u32, height as u32)
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Waits (up to 10 s) until `check` holds for the page.
    pub fn wait_until(&self, what: &str, check: impl Fn(&Browser) -> bool) {
        let started = Instant::now();
        while !check(self) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s (at {})",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

/// Chromium's own executable (Debian ships a launcher script at /usr/bin/chromium).
fn chromium_binary() -> String {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.exists() {
        real.display().to_string()
    } else {
        "/usr/bin/chromium".to_string()
    }
}

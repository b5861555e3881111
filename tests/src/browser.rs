//! Headless Chromium (Debian's `chromium`) renders a page to a PNG, the
//! way a person would look at it, and reports what the page logged to
//! its console (script errors, blocked loads, CSP violations).

use std::{path::Path, process::Command};

/// What a screenshot run gave.
pub struct Screenshot {
    /// Console messages the page produced (`INFO:CONSOLE` lines).
    pub console: Vec<String>,
    /// Chromium's whole stderr, for failure messages.
    pub stderr: String,
}

/// Renders `page` (a file) at `width`x`height` into `png`, with a fresh
/// profile in `profile` (removed by the caller): nothing from the network,
/// no sandbox (we are root), no GPU.
pub fn screenshot(page: &Path, png: &Path, profile: &Path, width: u32, height: u32) -> Screenshot {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (apt-get install chromium)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium exited with {}: {stderr}",
        out.status
    );
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Screenshot { console, stderr }
}

//! A real headless browser (Chromium from Debian) for the HTML pages: render a page (DOM dump,
//! screenshot and network log in one run, every host name mapped to NOTFOUND), measure the
//! screenshot's ink, and check that nothing in a page can fetch or run anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Chromium, or a failure that says how to install it.
pub fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromium is not installed: run scripts/install-peers.sh (or apt-get install chromium)");
}

/// What Chromium made of a page.
pub struct Rendered {
    pub dom: String,
    pub png: PathBuf,
    /// The URLs in the browser's network log.
    pub urls: Vec<String>,
}

/// The browser's own background services (update checks, sign-in), not requests of the page.
pub fn browser_own(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':', '?']).next())
        .unwrap_or("");
    [
        "google.com",
        "googleapis.com",
        "gvt1.com",
        "gstatic.com",
        "googleusercontent.com",
    ]
    .iter()
    .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Renders `page` headless: DOM dump and a 1200x2000 screenshot, no host name resolves.
pub fn render(page: &Path, dir: &Path) -> Rendered {
    let png = dir.join("shot.png");
    let netlog = dir.join("netlog.json");
    let profile = dir.join("profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {}",
        page.display()
    );
    let log = std::fs::read_to_string(&netlog).unwrap_or_default();
    let mut urls = Vec::new();
    for part in log.split("\"url\":\"").skip(1) {
        if let Some(end) = part.find('"') {
            urls.push(part[..end].to_owned());
        }
    }
    Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        png,
        urls,
    }
}

/// (distinct colours, share of pixels that are not white) of a PNG.
pub fn pixel_variety(path: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("screenshot written"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let bpp = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0usize;
    let total = px.len() / bpp;
    for p in px.chunks_exact(bpp) {
        colours.insert((p[0], p[1], p[2]));
        if p[0] < 240 || p[1] < 240 || p[2] < 240 {
            inked += 1;
        }
    }
    (colours.len(), inked as f64 / total.max(1) as f64)
}

/// The part of the DOM between the opening of `<svg class="NAME"` and its end.
pub fn svg_of<'a>(dom: &'a str, class: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg class=\"{class}\""))
        .unwrap_or_else(|| panic!("no {class} in the DOM"));
    let end = dom[start..].find("</svg>").expect("svg closed") + start;
    &dom[start..end]
}

/// Nothing in the page can make the browser fetch or run anything. Every `<` of the page opens a
/// tag (text from the wire is escaped), so the tags are read one by one: no element that loads or
/// runs (script, img, link, iframe, object, embed, base, audio, video, source), no `src`, no event
/// handler, `href` only to in-page anchors, `url()` only to in-page references; no `@import`; a
/// CSP of default-src 'none'.
pub fn assert_self_contained(html: &str, what: &str) {
    assert!(
        html.contains("content=\"default-src 'none'"),
        "{what}: no CSP"
    );
    let style = html
        .split("<style>")
        .nth(1)
        .and_then(|s| s.split("</style>").next())
        .unwrap_or("");
    assert!(!style.contains("@import"), "{what}: @import");
    let mut checked = vec![style.to_owned()];
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        assert!(
            ![
                "script",
                "img",
                "link",
                "iframe",
                "object",
                "embed",
                "base",
                "audio",
                "video",
                "source",
                "image",
                "use",
                "foreignobject"
            ]
            .contains(&name.as_str()),
            "{what}: a <{name}> element"
        );
        let lower = tag.to_ascii_lowercase();
        for attr in lower.split_whitespace().skip(1) {
            let key = attr.split('=').next().unwrap_or("");
            assert!(key != "src" && key != "srcset", "{what}: {attr}");
            assert!(!key.starts_with("on"), "{what}: event handler {attr}");
        }
        for part in lower.split("href=\"").skip(1) {
            assert!(part.starts_with('#'), "{what}: href to {part}");
        }
        checked.push(lower);
    }
    for text in &checked {
        for part in text.split("url(").skip(1) {
            assert!(part.starts_with('#'), "{what}: url({part}");
        }
    }
}

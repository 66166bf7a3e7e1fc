//! Builds the web client (`web/`, Vue + Vite) into `web/dist`, which `src/http/web_client.rs`
//! embeds with rust-embed. Runs `npm ci` when `web/node_modules` is missing or older than the
//! lockfile, and `npm run build` when the inputs changed since the last build (a stamp in
//! `web/dist` records their hash). With `FECHATTER_SKIP_WEB_BUILD=1` Node is not needed: an
//! existing bundle is kept, or a one-page placeholder is written.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files and folders whose change means the bundle is stale.
const INPUTS: &[&str] = &[
    "web/src",
    "web/index.html",
    "web/package.json",
    "web/package-lock.json",
    "web/vite.config.ts",
    "web/tsconfig.json",
    "web/public",
];
const STAMP: &str = ".fechatter-build-stamp";
const FIX: &str = "install Node.js and npm (`apt-get install nodejs npm`), or set \
                   FECHATTER_SKIP_WEB_BUILD=1 to embed a placeholder page instead of the client";

fn main() {
    for input in INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=FECHATTER_SKIP_WEB_BUILD");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = root.join("web");
    let dist = web.join("dist");
    let hash = inputs_hash(&root);
    let stamp = dist.join(STAMP);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash) {
        return;
    }
    if std::env::var("FECHATTER_SKIP_WEB_BUILD").is_ok_and(|v| v == "1") {
        if !dist.join("index.html").exists() {
            write_placeholder(&dist);
        }
        println!("cargo:warning=FECHATTER_SKIP_WEB_BUILD=1: the web client is not rebuilt");
        return;
    }
    if Command::new("npm").arg("--version").output().is_err() {
        fail(&format!(
            "`npm` was not found on PATH. To build the web client, {FIX}."
        ));
    }
    if needs_install(&web) {
        run(&web, &["ci", "--no-audit", "--no-fund"]);
    }
    run(&web, &["run", "build"]);
    if !dist.join("index.html").exists() {
        fail("`npm run build` produced no web/dist/index.html");
    }
    if let Err(e) = std::fs::write(&stamp, &hash) {
        fail(&format!("cannot write {}: {e}", stamp.display()));
    }
}

/// `npm ci` is due when node_modules is missing or older than the lockfile.
fn needs_install(web: &Path) -> bool {
    let installed = web.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(&installed),
        modified(&web.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

fn run(web: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(web).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "`npm {}` in web/ failed ({s}); see its output above. To skip the client, {FIX}.",
            args.join(" ")
        )),
        Err(e) => fail(&format!(
            "cannot run npm: {e}. To build the web client, {FIX}."
        )),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: building the web client: {message}");
    std::process::exit(1);
}

/// A hash of every input file's path and contents (sorted, so it is stable).
fn inputs_hash(root: &Path) -> String {
    let mut files = Vec::new();
    for input in INPUTS {
        collect(&root.join(input), &mut files);
    }
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.strip_prefix(root).unwrap_or(&file).hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                collect(&entry.path(), out);
            }
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    }
}

fn write_placeholder(dist: &Path) {
    let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
        <title>Fechatter</title></head><body><h1>Fechatter</h1>\
        <p>This server was built with FECHATTER_SKIP_WEB_BUILD=1, so the web client is not \
        included. Rebuild with Node.js and npm installed (<code>apt-get install nodejs npm</code>) \
        to get it. The API is at <a href=\"/api/docs/\">/api/docs/</a>.</p></body></html>\n";
    let written =
        std::fs::create_dir_all(dist).and_then(|()| std::fs::write(dist.join("index.html"), page));
    if let Err(e) = written {
        fail(&format!("cannot write the placeholder page: {e}"));
    }
}

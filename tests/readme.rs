//! The README runs as printed. This test starts `panvault demo` (the built binary, on a free
//! loopback port, in a temp dir so that `./panvault-data` is the demo's data dir), reads the keys
//! it printed, and then runs every ```sh and ```python block of README.md in order:
//!
//! - `127.0.0.1:8443` becomes the demo's address and `cargo run --release -q --` the built binary;
//!   `KEY` (the shop key), `ADMIN_KEY` and `CA` are exported, as the README asks the reader to set
//!   them; shell variables a command sets (`OP=$(...)`, `export ...`) carry over to the next
//!   commands.
//! - `$ cmd` (with `\` continuations) is a command whose following lines are its expected output:
//!   each line is compared with the output's line, JSON by value (`...` as a member, element or
//!   value: "more here"), text with `...` as "more text here", and a line `...` stands for any
//!   lines. What truly varies per run is matched by shape, found from the printed value itself:
//!   RFC 3339 times, standard tokens (the random middle), prefixed ids and keys with a digit
//!   (`mer_...`, `pvk_...`, `tmp_...`) and lowercase hex of 16 or more characters (hashes, MACs,
//!   request ids). Everything else must be equal. In a block with `$` lines, `#` lines before the
//!   first one are comments.
//! - Any other line of a sh block (with `\` continuations; `#` comments and blank lines skipped)
//!   is one command that must exit 0 (with `pipefail`), and must not answer a panvault problem.
//!   `NAME=value...  # ...` is a value the reader copies by hand: it must be one the test sets.
//! - A ```python block runs with `python3` and must exit 0, with `REQUESTS_CA_BUNDLE` set to a
//!   bundle without the vault's CA (the README's advice must hold there).
//! - The demo runs until the first command that runs panvault itself on the data dir: the README
//!   stops it (Ctrl-C) before the auditor's commands; the test sends SIGINT and wants exit 0.
//! - An untagged block that begins with `panvault demo:` is the demo's printed output: it must
//!   match the start of what the demo printed, by the same rules.
//!
//! So README.md is the one source of what the tour prints: a wrong printed value fails here,
//! naming the README line. A binary of its own because it is about one file (README.md) and one
//! long scenario on one demo vault, which shares nothing with the other binaries' fixtures; it
//! takes a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The README's address of the vault, replaced by the demo's.
const README_ADDR: &str = "127.0.0.1:8443";
/// The README's way to run panvault, replaced by the built binary.
const README_RUN: &str = "cargo run --release -q --";
/// Longest a single command may take.
const COMMAND_TIMEOUT_SECS: u32 = 120;

// ---------------------------------------------------------------------------------------------
// The README's blocks and what they ask to run.

/// A fenced block: its info string, the README line of its first content line, its lines.
struct Block {
    lang: String,
    line: usize,
    lines: Vec<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => {
                    open = Some(Block {
                        lang: info.trim().to_string(),
                        line: i + 2,
                        lines: Vec::new(),
                    })
                }
            }
        } else if let Some(b) = &mut open {
            b.lines.push(line.to_string());
        }
    }
    assert!(open.is_none(), "README.md has an unclosed ``` block");
    out
}

/// One thing to run, with the README line it starts on.
enum Step {
    /// A command that must exit 0.
    Run { line: usize, cmd: String },
    /// A `$ ` command and the output it must print.
    Expect {
        line: usize,
        cmd: String,
        expected: Vec<String>,
    },
    /// `NAME=...`: a value the reader fills in.
    Placeholder { line: usize, name: String },
    /// A Python program.
    Python { line: usize, code: String },
}

/// A command starting at `lines[*i]`, joined with its `\` continuations; `*i` moves past it.
fn command(lines: &[String], i: &mut usize, first: &str) -> String {
    let mut cmd = first.to_string();
    *i += 1;
    while cmd.ends_with('\\') && *i < lines.len() {
        cmd.push('\n');
        cmd.push_str(&lines[*i]);
        *i += 1;
    }
    cmd
}

/// `NAME=value # ...` where the value holds `...`: the variable's name.
fn placeholder(cmd: &str) -> Option<String> {
    let (name, value) = cmd.split_once('=')?;
    let value = value.split(" #").next().unwrap_or_default();
    let is_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    (is_name && value.contains("...")).then(|| name.to_string())
}

fn steps(block: &Block) -> Vec<Step> {
    let lines = &block.lines;
    let transcript = lines.iter().any(|l| l.starts_with("$ "));
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = block.line + i;
        let text = lines[i].trim();
        if let Some(first) = lines[i].strip_prefix("$ ") {
            let cmd = command(lines, &mut i, first);
            let mut expected = Vec::new();
            while i < lines.len() && !lines[i].starts_with("$ ") {
                expected.push(lines[i].clone());
                i += 1;
            }
            while expected.last().is_some_and(|l| l.trim().is_empty()) {
                expected.pop();
            }
            out.push(Step::Expect {
                line,
                cmd,
                expected,
            });
        } else if text.is_empty() || text.starts_with('#') {
            i += 1;
        } else {
            assert!(
                !transcript,
                "README.md:{line}: a line before the first `$ ` of a block with `$` commands that \
                 is no comment: {text}"
            );
            let first = lines[i].clone();
            let cmd = command(lines, &mut i, &first);
            out.push(match placeholder(&cmd) {
                Some(name) => Step::Placeholder { line, name },
                None => Step::Run { line, cmd },
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Matching printed output against real output.

/// One element of a text pattern.
enum El {
    Lit(char),
    Class(fn(char) -> bool),
    /// `...`: any text.
    Any,
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

fn upper_or_digit(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

/// The length of an RFC 3339 UTC time at the start of `s` (`2026-11-23T20:44:28Z`, with
/// optional fractional seconds).
fn rfc3339_len(s: &[char]) -> Option<usize> {
    let shape = "dddd-dd-ddTdd:dd:dd";
    if s.len() < shape.len() + 1 {
        return None;
    }
    for (c, want) in s.iter().zip(shape.chars()) {
        let ok = if want == 'd' {
            c.is_ascii_digit()
        } else {
            *c == want
        };
        if !ok {
            return None;
        }
    }
    let mut n = shape.len();
    if s.get(n) == Some(&'.') {
        n += 1;
        while s.get(n).is_some_and(char::is_ascii_digit) {
            n += 1;
        }
    }
    (s.get(n) == Some(&'Z')).then_some(n + 1)
}

/// What a printed word varies by, if it is one of the shapes that vary per run: a pattern for
/// it.
fn varying_word(w: &[char]) -> Option<Vec<El>> {
    let s: String = w.iter().collect();
    // A standard token: 2 digits, the merchant prefix, 6 random characters, the last 4.
    let standard = w.len() == 16
        && w[..2].iter().all(char::is_ascii_digit)
        && w[2..6].iter().all(char::is_ascii_uppercase)
        && w[6..12].iter().all(|c| upper_or_digit(*c))
        && w[12..].iter().all(char::is_ascii_digit);
    if standard {
        let mut p: Vec<El> = w[..6].iter().map(|c| El::Lit(*c)).collect();
        p.extend((0..6).map(|_| El::Class(upper_or_digit)));
        p.extend(w[12..].iter().map(|c| El::Lit(*c)));
        return Some(p);
    }
    // A prefixed random id or key: `mer_`, `pvk_`, `tmp_` and a random part holding a digit.
    if let Some(u) = s.find('_')
        && (2..=4).contains(&u)
        && s[..u].chars().all(|c| c.is_ascii_lowercase())
        && s.len() - u > 8
        && s[u..].chars().any(|c| c.is_ascii_digit())
    {
        let mut p: Vec<El> = w[..=u].iter().map(|c| El::Lit(*c)).collect();
        p.extend(w[u + 1..].iter().map(|_| El::Class(word_char)));
        return Some(p);
    }
    // A hash, MAC or request id: lowercase hex with letters and digits.
    if w.len() >= 16
        && w.iter().all(|c| is_hex(*c))
        && w.iter().any(|c| c.is_ascii_digit())
        && w.iter().any(|c| c.is_ascii_alphabetic())
    {
        return Some(w.iter().map(|_| El::Class(is_hex)).collect());
    }
    None
}

fn compile(expected: &str) -> Vec<El> {
    let s: Vec<char> = expected.chars().collect();
    let mut p = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(&['.', '.', '.']) {
            p.push(El::Any);
            i += 3;
        } else if let Some(n) = rfc3339_len(&s[i..]) {
            p.extend(s[i..i + n].iter().map(|c| {
                if c.is_ascii_digit() {
                    El::Class(is_digit)
                } else {
                    El::Lit(*c)
                }
            }));
            i += n;
        } else if word_char(s[i]) && (i == 0 || !word_char(s[i - 1])) {
            let end = (i..s.len()).find(|&j| !word_char(s[j])).unwrap_or(s.len());
            match varying_word(&s[i..end]) {
                Some(w) => p.extend(w),
                None => p.extend(s[i..end].iter().map(|c| El::Lit(*c))),
            }
            i = end;
        } else {
            p.push(El::Lit(s[i]));
            i += 1;
        }
    }
    p
}

/// Does `text` match `pattern` as a whole?
fn glob(pattern: &[El], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    // ok[j]: the pattern so far matches t[..j].
    let mut ok = vec![false; t.len() + 1];
    ok[0] = true;
    for el in pattern {
        let mut next = vec![false; t.len() + 1];
        match el {
            El::Any => {
                let mut seen = false;
                for j in 0..=t.len() {
                    seen |= ok[j];
                    next[j] = seen;
                }
            }
            El::Lit(c) => {
                for j in 0..t.len() {
                    next[j + 1] = ok[j] && t[j] == *c;
                }
            }
            El::Class(f) => {
                for j in 0..t.len() {
                    next[j + 1] = ok[j] && f(t[j]);
                }
            }
        }
        ok = next;
    }
    ok[t.len()]
}

fn text_matches(expected: &str, actual: &str) -> bool {
    glob(&compile(expected), actual)
}

/// A printed JSON value, where `...` stands for more members, elements or a whole value.
enum Pat {
    Any,
    Object(Vec<(String, Pat)>, bool),
    Array(Vec<Pat>, bool),
    Str(String),
    Scalar(Value),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.i) == Some(&b)).then(|| self.i += 1)
    }

    fn ellipsis(&mut self) -> bool {
        self.ws();
        let yes = self.s[self.i..].starts_with(b"...");
        if yes {
            self.i += 3;
        }
        yes
    }

    fn string(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        loop {
            match self.s.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        serde_json::from_slice(&self.s[start..self.i]).ok()
    }

    fn value(&mut self) -> Option<Pat> {
        if self.ellipsis() {
            return Some(Pat::Any);
        }
        self.ws();
        match self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let (mut members, mut open) = (Vec::new(), false);
                if self.eat(b'}').is_some() {
                    return Some(Pat::Object(members, open));
                }
                loop {
                    if self.ellipsis() {
                        open = true;
                    } else {
                        let k = self.string()?;
                        self.eat(b':')?;
                        members.push((k, self.value()?));
                    }
                    if self.eat(b'}').is_some() {
                        return Some(Pat::Object(members, open));
                    }
                    self.eat(b',')?;
                }
            }
            b'[' => {
                self.i += 1;
                let (mut items, mut open) = (Vec::new(), false);
                if self.eat(b']').is_some() {
                    return Some(Pat::Array(items, open));
                }
                loop {
                    if self.ellipsis() {
                        open = true;
                    } else {
                        items.push(self.value()?);
                    }
                    if self.eat(b']').is_some() {
                        return Some(Pat::Array(items, open));
                    }
                    self.eat(b',')?;
                }
            }
            b'"' => self.string().map(Pat::Str),
            _ => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| !b",]} \t".contains(b)) {
                    self.i += 1;
                }
                serde_json::from_slice(&self.s[start..self.i])
                    .ok()
                    .map(Pat::Scalar)
            }
        }
    }
}

/// The printed line as a JSON pattern, if it is one.
fn json_pattern(line: &str) -> Option<Pat> {
    let t = line.trim();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    let mut p = Parser {
        s: t.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == t.len()).then_some(v)
}

/// Where `actual` differs from `pat`, as a JSON path, or None if it matches.
fn json_mismatch(pat: &Pat, actual: &Value, path: &str) -> Option<String> {
    let at = |what: &str| {
        Some(format!(
            "{}: {what}",
            if path.is_empty() { "." } else { path }
        ))
    };
    match (pat, actual) {
        (Pat::Any, _) => None,
        (Pat::Str(e), Value::String(a)) if text_matches(e, a) => None,
        (Pat::Scalar(e), a) if e == a => None,
        (Pat::Str(_) | Pat::Scalar(_), _) => at("differs"),
        (Pat::Object(members, open), Value::Object(a)) => {
            for (k, p) in members {
                match a.get(k) {
                    Some(v) => {
                        if let Some(m) = json_mismatch(p, v, &format!("{path}.{k}")) {
                            return Some(m);
                        }
                    }
                    None => return at(&format!("no field `{k}`")),
                }
            }
            if !open && let Some(k) = a.keys().find(|k| !members.iter().any(|(m, _)| m == *k)) {
                return at(&format!(
                    "a field `{k}` not printed (add `...` if it may be there)"
                ));
            }
            None
        }
        (Pat::Array(items, open), Value::Array(a)) => {
            if !open {
                if items.len() != a.len() {
                    return at(&format!("{} elements, printed {}", a.len(), items.len()));
                }
                for (n, (p, v)) in items.iter().zip(a).enumerate() {
                    if let Some(m) = json_mismatch(p, v, &format!("{path}[{n}]")) {
                        return Some(m);
                    }
                }
                return None;
            }
            // With `...`: the printed elements appear in this order.
            let mut rest = a.iter();
            for (n, p) in items.iter().enumerate() {
                if !rest.any(|v| json_mismatch(p, v, path).is_none()) {
                    return at(&format!("printed element {n} not found (in order)"));
                }
            }
            None
        }
        _ => at("another kind of value"),
    }
}

fn line_matches(expected: &str, actual: &str) -> Result<(), String> {
    match json_pattern(expected) {
        Some(p) => {
            let v: Value = serde_json::from_str(actual)
                .map_err(|_| "printed JSON, got something else".to_string())?;
            json_mismatch(&p, &v, "").map_or(Ok(()), Err)
        }
        None if text_matches(expected, actual) => Ok(()),
        None => Err("the text differs".into()),
    }
}

/// Do the actual lines match the printed ones (a printed line `...` being any lines)? The
/// first problem found if not.
fn lines_match(expected: &[String], actual: &[&str]) -> Result<(), String> {
    match expected.split_first() {
        None if actual.is_empty() => Ok(()),
        None => Err(format!("{} more line(s) than printed", actual.len())),
        Some((e, rest)) if e.trim() == "..." => {
            let mut last = Err("nothing after `...` matches".to_string());
            for skip in 0..=actual.len() {
                last = lines_match(rest, &actual[skip..]);
                if last.is_ok() {
                    break;
                }
            }
            last
        }
        Some((e, rest)) => {
            let Some((a, more)) = actual.split_first() else {
                return Err(format!("missing line: {e}"));
            };
            line_matches(e, a).map_err(|why| format!("line `{e}`: {why}"))?;
            lines_match(rest, more)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running: the demo, and a shell whose variables carry over from one command to the next.

/// Card numbers in a message replaced, so that no failure prints one.
fn masked(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if (12..=19).contains(&run.len()) {
            out.push_str(&format!("[{} digits]", run.len()));
        } else {
            out.push_str(&run);
        }
        run.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// `panvault demo`, killed if the test ends while it runs.
struct Demo {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--data",
                "./panvault-data",
            ])
            .current_dir(dir)
            .env("PANVAULT_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Box<dyn Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Demo {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Waits for the shop key, the admin key and the vault's port in what the demo printed.
    fn keys_and_port(&self) -> (String, String, u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.stdout.lock().unwrap().clone();
            let err = self.stderr.lock().unwrap().clone();
            let key = |label: &str| {
                out.iter()
                    .filter(|l| l.to_ascii_lowercase().contains(label))
                    .flat_map(|l| l.split_whitespace())
                    .find(|w| w.starts_with("pvk_"))
                    .map(str::to_string)
            };
            let port = out
                .iter()
                .chain(&err)
                .filter_map(|l| l.split("https://127.0.0.1:").nth(1))
                .find_map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u16>().ok()
                });
            if let (Some(shop), Some(admin), Some(port)) = (key("shop key"), key("admin key"), port)
            {
                return (shop, admin, port);
            }
            assert!(
                Instant::now() < deadline,
                "demo printed no keys and address: {}\n{}",
                masked(&out.join("\n")),
                masked(&err.join("\n"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: the demo drains and exits 0.
    fn interrupt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "demo after Ctrl-C: {status:?}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Shell {
    dir: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    n: usize,
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Shell {
    fn state(&self) -> PathBuf {
        self.dir.join(".readme-shell-state")
    }

    /// The README's command as it runs here.
    fn localize(&self, s: &str) -> String {
        let bin = env!("CARGO_BIN_EXE_panvault");
        s.replace(README_ADDR, &format!("127.0.0.1:{}", self.port))
            .replace(README_RUN, &format!("'{bin}'"))
    }

    /// Runs `cmd` in bash after the variables earlier commands set, and keeps the ones it sets.
    fn run(&mut self, cmd: &str, extra_env: &[(&str, &str)]) -> Ran {
        self.n += 1;
        let script_path = self.dir.join(format!(".readme-cmd-{}.sh", self.n));
        let state = self.state();
        let script = format!(
            "__before=$(compgen -v)\n\
             [ -f '{state}' ] && source '{state}'\n\
             set -o pipefail\n\
             {cmd}\n\
             __rc=$?\n\
             for __v in $(compgen -v); do\n\
               case $__v in __*|_|BASH*|COLUMNS|LINES|PIPESTATUS|FUNCNAME) continue;; esac\n\
               grep -qxF \"$__v\" <<<\"$__before\" || declare -p \"$__v\"\n\
             done >'{state}.new' 2>/dev/null && mv '{state}.new' '{state}'\n\
             exit $__rc\n",
            state = state.display(),
        );
        std::fs::write(&script_path, script).unwrap();
        let mut c = Command::new("timeout");
        c.arg(COMMAND_TIMEOUT_SECS.to_string())
            .arg("bash")
            .arg(&script_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        for k in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
        ] {
            c.env_remove(k);
        }
        for (k, v) in self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
            c.env(k, v);
        }
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A CA bundle that does not hold the vault's CA: certifi's, which `requests` ships with.
fn other_ca_bundle(shell: &mut Shell) -> String {
    let r = shell.run("python3 -c 'import certifi; print(certifi.where())'", &[]);
    assert!(
        r.ok,
        "python3 with requests (tests/requirements.txt): {}",
        r.stderr
    );
    r.stdout.trim().to_string()
}

/// A panvault problem answer (`urn:panvault:problem:...`) in this output?
fn is_problem(stdout: &str) -> bool {
    stdout.contains("\"type\":\"urn:panvault:problem:")
}

#[test]
fn readme_tour_runs_as_printed() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let all = blocks(&readme);
    let runnable = all.iter().filter(|b| b.lang == "sh" || b.lang == "python");
    assert!(runnable.clone().count() >= 5, "README.md has sh blocks");

    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(dir.path());
    let (shop, admin, port) = demo.keys_and_port();
    let mut shell = Shell {
        dir: dir.path().to_path_buf(),
        env: vec![
            ("KEY".into(), shop),
            ("ADMIN_KEY".into(), admin),
            ("CA".into(), "./panvault-data/tls/ca.pem".into()),
        ],
        port,
        n: 0,
    };
    let set_by_test = ["KEY", "ADMIN_KEY", "CA"];

    // The demo's printed output, as the README shows it.
    let printed_demo = all
        .iter()
        .filter(|b| b.lang.is_empty() || b.lang == "text")
        .find(|b| {
            b.lines
                .first()
                .is_some_and(|l| l.starts_with("panvault demo:"))
        });
    if let Some(b) = printed_demo {
        let out = demo.stdout.lock().unwrap().clone();
        let mut expected = b.lines.clone();
        expected.push("...".into());
        let actual: Vec<&str> = out.iter().map(String::as_str).collect();
        if let Err(why) = lines_match(&expected, &actual) {
            panic!(
                "README.md:{}: the demo's printed output differs: {}\n--- demo printed:\n{}",
                b.line,
                masked(&why),
                masked(&out.join("\n"))
            );
        }
    }

    let bundle = other_ca_bundle(&mut shell);
    let mut ran = 0;
    for block in runnable {
        let steps = if block.lang == "python" {
            vec![Step::Python {
                line: block.line,
                code: block.lines.join("\n") + "\n",
            }]
        } else {
            steps(block)
        };
        for step in steps {
            ran += 1;
            let (line, cmd, expected) = match step {
                Step::Placeholder { line, name } => {
                    assert!(
                        set_by_test.contains(&name.as_str()),
                        "README.md:{line}: `{name}=...` is not runnable as printed (the test \
                         sets only {set_by_test:?})"
                    );
                    continue;
                }
                Step::Python { line, code } => {
                    let file = format!("readme-{line}.py");
                    std::fs::write(dir.path().join(&file), code).unwrap();
                    let r = shell.run(
                        &format!("python3 {file}"),
                        &[("REQUESTS_CA_BUNDLE", bundle.as_str())],
                    );
                    assert!(
                        r.ok,
                        "README.md:{line}: the python block failed:\n{}\n{}",
                        masked(&r.stdout),
                        masked(&r.stderr)
                    );
                    continue;
                }
                Step::Run { line, cmd } => (line, cmd, None),
                Step::Expect {
                    line,
                    cmd,
                    expected,
                } => (line, cmd, Some(expected)),
            };
            if cmd.contains(README_RUN) {
                // The README stops the demo (Ctrl-C) before panvault opens its data dir.
                demo.interrupt();
            }
            run_step(&mut shell, line, &cmd, expected.as_ref());
        }
    }
    assert!(ran > 20, "only {ran} commands ran");
    demo.interrupt();
    // No card number of the README in the vault's logs.
    let log = demo.stderr.lock().unwrap().join("\n");
    assert_eq!(masked(&log), log, "a card number in the demo's log");
}

fn run_step(shell: &mut Shell, line: usize, cmd: &str, expected: Option<&Vec<String>>) {
    let r = shell.run(&shell.localize(cmd), &[]);
    let shown = || {
        format!(
            "\n--- command:\n{cmd}\n--- stdout:\n{}\n--- stderr:\n{}",
            masked(&r.stdout),
            masked(&r.stderr)
        )
    };
    assert!(r.ok, "README.md:{line}: the command failed{}", shown());
    match expected {
        None => assert!(
            !is_problem(&r.stdout),
            "README.md:{line}: the command answered a problem{}",
            shown()
        ),
        Some(expected) => {
            let expected: Vec<String> = expected.iter().map(|e| shell.localize(e)).collect();
            let actual: Vec<&str> = r.stdout.lines().collect();
            let mut actual = actual;
            while actual.last().is_some_and(|l| l.trim().is_empty()) {
                actual.pop();
            }
            if let Err(why) = lines_match(&expected, &actual) {
                panic!(
                    "README.md:{line}: the output is not the printed one: {}{}\n--- printed:\n{}",
                    masked(&why),
                    shown(),
                    masked(&expected.join("\n"))
                );
            }
        }
    }
}

#[test]
fn the_matcher_takes_shapes_and_refuses_values() {
    let e =
        r#"{"bin":"411111",...,"created_at":"2026-11-23T20:44:28Z","token":"41XYZWQ52J331111"}"#;
    let ok = r#"{"bin":"411111","brand":"visa","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1111"}"#;
    assert_eq!(line_matches(e, ok), Ok(()));
    for bad in [
        r#"{"bin":"411112","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1111"}"#,
        r#"{"bin":"411111","created_at":"soon","token":"41XYZWAB12CD1111"}"#,
        r#"{"bin":"411111","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1112"}"#,
        r#"{"bin":"411111","created_at":"2027-01-02T03:04:05Z"}"#,
    ] {
        assert!(line_matches(e, bad).is_err(), "{bad}");
    }
    // No `...`: no other field.
    assert!(line_matches(r#"{"a":1}"#, r#"{"a":1,"b":2}"#).is_err());
    assert!(line_matches(r#"{"a":...}"#, r#"{"a":[1]}"#).is_ok());
    assert!(line_matches(r#"{"a":[...,{"b":2}]}"#, r#"{"a":[{"b":1},{"b":2}]}"#).is_ok());
    assert!(line_matches(r#"{"a":[{"b":2}]}"#, r#"{"a":[{"b":1},{"b":2}]}"#).is_err());
    // Codes and words are values, not shapes.
    assert!(
        line_matches(
            r#"{"code":"luhn_check_failed"}"#,
            r#"{"code":"luhn_check_failes"}"#
        )
        .is_err()
    );
    // Keys, ids and hashes by shape; text with `...`.
    assert!(text_matches(
        "shop key:       pvk_e71d62a37fc5e855_r44qLDxY1KqD-mlFA8S7RQpOv3HqG3UjaNeFDmX02RY  (tokenize)",
        "shop key:       pvk_d2c935e6b1a0425e_J6CxUcLG_rlI8BKXLqKWhO0nV2Y4VJofeVqHE24r-c8  (tokenize)"
    ));
    assert!(!text_matches(
        "audit chain ok: 12 entries",
        "audit chain ok: 13 entries"
    ));
    assert!(text_matches(
        "last hash 1147862e4662b44112a4e854e4d25936a9e28e8bc92683cc532916b449049681",
        "last hash 0905ec51ee2ae6ca5a63a3b917ba90e99b96bb8c216f678c5d6180a60c548d5f"
    ));
    assert!(text_matches("a ... z", "a b c z"));
    assert!(!text_matches(
        "tmp_33F365PIKMGUIJNXWZWRQSX2VIARHJXE",
        "tmp_33F365"
    ));
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(lines_match(&lines(&["a", "...", "z"]), &["a", "b", "c", "z"]).is_ok());
    assert!(lines_match(&lines(&["a", "z"]), &["a", "b", "z"]).is_err());
    assert!(lines_match(&lines(&[]), &["a"]).is_err());
    assert_eq!(
        masked("pan 4111111111111111 and 1234"),
        "pan [16 digits] and 1234"
    );
}

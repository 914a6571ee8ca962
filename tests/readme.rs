//! The README runs as printed. This test starts `panvault demo` (the built binary, on a free
//! loopback port, in a temp dir so that `./panvault-data` is the demo's data dir), reads the keys
//! it printed, and then runs every ```sh and ```python block of README.md in order:
//!
//! - `127.0.0.1:8443` becomes the demo's address and `cargo run --release -q --` the built binary;
//!   `KEY` (the shop key), `ADMIN_KEY` and `CA` are exported, as the README asks the reader to set
//!   them; shell variables a command sets (`OP=$(...)`, `export ...`) carry over to the next
//!   commands.
//! - A command goes on over the lines `bash -n` says it needs (`\` continuations, a quote or a
//!   here-document over several lines).
//! - `$ cmd` is a command whose following lines are its expected output:
//!   each line is compared with the output's line, JSON by value (`...` as a member, element or
//!   value: "more here"), text with `...` as "more text here", and a line `...` stands for any
//!   lines. What truly varies per run is matched by shape, found from the printed value itself:
//!   RFC 3339 times, standard tokens (the random middle), prefixed ids and keys with a digit
//!   (`mer_...`, `pvk_...`, `tmp_...`) and lowercase hex of 16 or more characters (hashes, MACs,
//!   request ids). Everything else must be equal. In a block with `$` lines, `#` lines before the
//!   first one are comments.
//! - Any other line of a sh block (`#` comments and blank lines skipped) is one command that must
//!   exit 0 (with `pipefail`), and must not answer a panvault problem.
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
//! takes about 15 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "readme/matcher.rs"]
mod matcher;

use matcher::{lines_match, masked};

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

/// Is `cmd` a whole shell command, or does it go on (an open quote, `$(`, `if`, a here-document
/// without its end)? `bash -n` tells.
fn complete(cmd: &str) -> bool {
    let out = Command::new("bash")
        .args(["-n", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    ![
        "unexpected EOF",
        "unexpected end of file",
        "delimited by end-of-file",
    ]
    .iter()
    .any(|m| err.contains(m))
}

/// A command starting at `lines[*i]`, with the lines it goes on to (`\` continuations, a quote
/// or here-document over several lines); `*i` moves past it.
fn command(lines: &[String], i: &mut usize, first: &str) -> String {
    let mut cmd = first.to_string();
    *i += 1;
    while *i < lines.len() && (cmd.ends_with('\\') || !complete(&cmd)) {
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
// Running: the demo, and a shell whose variables carry over from one command to the next.

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
                    .chain(&err)
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
    // No card number (a run of 12 to 19 digits) in the vault's logs; the message masks it.
    let log = demo.stderr.lock().unwrap().join("\n");
    assert!(
        masked(&log) == log,
        "a card number in the demo's log:\n{}",
        masked(&log)
    );
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
fn a_block_splits_into_commands_and_outputs() {
    let block = |text: &str| Block {
        lang: "sh".into(),
        line: 10,
        lines: text.lines().map(str::to_string).collect(),
    };
    let b = block(
        "# a comment\n$ curl -sS \\\n    -d '<a>\n<b/>\n</a>' x\n<ok/>\n...\n$ cat <<'EOF'\nline\nEOF\nline",
    );
    let got: Vec<(usize, String, Vec<String>)> = steps(&b)
        .into_iter()
        .map(|s| match s {
            Step::Expect {
                line,
                cmd,
                expected,
            } => (line, cmd, expected),
            _ => panic!("a `$` block has only `$` commands"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                11,
                "curl -sS \\\n    -d '<a>\n<b/>\n</a>' x".to_string(),
                vec!["<ok/>".to_string(), "...".to_string()]
            ),
            (
                17,
                "cat <<'EOF'\nline\nEOF".to_string(),
                vec!["line".to_string()]
            ),
        ]
    );
    let b = block("KEY=pvk_...   # the key\nCA=./ca.pem\nOP=$(curl x |\n  python3 -c 'print(1)')");
    let got: Vec<String> = steps(&b)
        .into_iter()
        .map(|s| match s {
            Step::Placeholder { name, .. } => format!("placeholder {name}"),
            Step::Run { cmd, .. } => cmd,
            _ => panic!("no `$` here"),
        })
        .collect();
    assert_eq!(
        got,
        [
            "placeholder KEY",
            "CA=./ca.pem",
            "OP=$(curl x |\n  python3 -c 'print(1)')"
        ]
    );
}

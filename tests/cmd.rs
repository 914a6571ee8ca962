//! Snapshot tests of the command line (issue 15 points 5 and 10), in the style of rage's
//! `trycmd`: `tests/cmd/*.toml` and `tests/cmd/*.md` hold each command as typed and what it
//! printed (stdout and stderr, and the exit code), for the `--help` of every command and
//! subcommand and for every command that runs without a server, errors included. A change of
//! wording fails here first; `TRYCMD=overwrite cargo test --test cmd` rewrites the snapshots
//! (read the diff before committing them). What varies from run to run (keys, hashes, times,
//! the sandbox's path) is elided with `[..]` / `...`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin(
            "panvault",
            trycmd::schema::Bin::Path(env!("CARGO_BIN_EXE_panvault").into()),
        )
        // A clean environment: no inherited vault, key file or log filter.
        .env("NO_COLOR", "1")
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.md");
}

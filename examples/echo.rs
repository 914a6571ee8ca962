//! The ceiling for `benches/http_load.sh`: a bare actix-web + rustls endpoint, `POST /echo`,
//! that parses a JSON body and returns it. It serves with the vault's own TLS configuration
//! (`panvault::tls::server_config` without client certificates: same certificate, versions and
//! suites) and the same worker count (actix-web's default, one per available core, as `serve`
//! uses), with no middleware, authentication, crypto or storage, so the vault's figures can be
//! read as a fraction of what this machine's HTTPS stack can do at all.
//!
//! ```sh
//! cargo run --release --example echo -- DATA_DIR 127.0.0.1:0
//! ```
//!
//! `DATA_DIR` is a vault data dir (its `tls/` is used); the bound address is printed on stdout
//! as `listening on https://ADDR` once the server accepts connections.

use std::io::{Error, ErrorKind, Result};
use std::net::SocketAddr;
use std::path::PathBuf;

use actix_web::{App, HttpResponse, HttpServer, web};

/// mimalloc: glibc malloc/free were ~17% of the server's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn echo(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || {
        Error::new(
            ErrorKind::InvalidInput,
            "usage: echo DATA_DIR [LISTEN_ADDR]",
        )
    };
    let data = PathBuf::from(args.next().ok_or_else(usage)?);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|_| usage())?;
    let tls = panvault::tls::server_config(&data, None)
        .map_err(|e| Error::other(format!("tls config from {}: {e}", data.display())))?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| App::new().route("/echo", web::post().to(echo)))
            .bind_rustls_0_23(listen, tls)?;
        for addr in server.addrs() {
            println!("listening on https://{addr}");
        }
        server.run().await
    })
}

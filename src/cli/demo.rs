//! `panvault demo`: the newcomer's path. A dev vault, a demo merchant and keys, the gateway
//! sandbox behind the proxy, and curl lines that work against them, printed as one block on
//! stdout once the vault listens (logs go to stderr, warnings only by default).

use std::io::Write;

use crate::access::{ApiKeyRequest, Scope};
use crate::keys::Unlock;
use crate::seal::Gate;
use crate::vault::{self, Ctx, InitOptions, Options, Vault};
use crate::{Error, Result};

use super::DemoArgs;
use super::serve::run_server;

/// Shop login, prefix and scopes of the demo merchant.
const DEMO_PREFIX: &str = "XYZW";
const DEMO_SHOP: &str = "9000001";

pub(super) fn run(a: DemoArgs) -> Result<()> {
    if !vault::exists(&a.data) {
        Vault::init(&a.data, InitOptions::dev(crate::store::Backend::Redb))?;
        crate::tls::generate(&a.data)?;
    }
    crate::harden::at_start(&a.data, None)?;
    crate::harden::after_secrets_read();
    let vault = Vault::open(&a.data, &Unlock::Dev, Options::default())?;
    let ctx = Ctx {
        actor: "demo".into(),
        ..Ctx::default()
    };
    let (admin, key, merchant) = actix_web::rt::System::new().block_on(async {
        let merchant = match vault.merchant_by_prefix(DEMO_PREFIX)? {
            Some(m) => m,
            None => {
                vault
                    .create_merchant(&ctx, "Demo merchant", Some(DEMO_PREFIX))
                    .await?
            }
        };
        match vault.add_shop(&ctx, &merchant.merchant_id, DEMO_SHOP).await {
            Ok(()) | Err(Error::ShopTaken) => {}
            Err(e) => return Err(e),
        }
        let admin = vault
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    admin: true,
                    scopes: crate::access::ADMIN_SCOPES.to_vec(),
                    label: Some("demo admin".into()),
                    ..ApiKeyRequest::default()
                },
            )
            .await?;
        let key = vault
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some(DEMO_SHOP.into()),
                    scopes: vec![Scope::Tokenize, Scope::Read, Scope::Reveal, Scope::Charge],
                    label: Some("demo shop".into()),
                    ..ApiKeyRequest::default()
                },
            )
            .await?;
        Ok::<_, Error>((admin, key, merchant))
    })?;
    let ca = std::fs::canonicalize(crate::tls::ca_path(&a.data))
        .unwrap_or_else(|_| crate::tls::ca_path(&a.data));
    let data = a.data.clone();
    // `demo` runs the gateway sandbox too and points the proxy at it.
    let sandbox = crate::sandbox::start_in_background()?;
    let proxy = crate::gateway::proxy::Proxy::new(crate::sandbox::demo_gateways(sandbox), |k| {
        std::env::var(k).ok()
    })?;
    run_server(
        Gate::unsealed(vault, Options::default())?,
        a.listen,
        false,
        &a.data,
        None,
        crate::http::RevealLimit::default(),
        proxy,
        crate::http::EdgeOptions::default(),
        move |addr| {
            // One block on stdout, apart from the logs (stderr; warnings only unless
            // PANVAULT_LOG says otherwise): nothing else writes to stdout while it is held.
            let mut stdout = std::io::stdout().lock();
            let base = format!("https://{addr}");
            let curl = format!("curl -sS --cacert {}", ca.display());
            let shop = key.api_key.expose();
            println!(
                "panvault demo: a dev vault in {} (never put real cards in it)",
                data.display()
            );
            println!();
            println!("admin key:      {}", admin.api_key.expose());
            println!(
                "merchant:       {} (prefix {DEMO_PREFIX}), shop login {DEMO_SHOP}",
                merchant.merchant_id
            );
            println!("shop key:       {shop}  (tokenize read reveal charge)");
            println!();
            println!("# tokenize a test card (run it twice: same token, 200 instead of 201)");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"pan\":\"4111111111111111\",\"expiry_month\":12,\"expiry_year\":2030}}' {base}/v1/tokens"
            );
            println!("# a custom token");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"pan\":\"5555555555554444\",\"expiry_month\":3,\"expiry_year\":2031,\"request_token\":\"JOHN_SMITH_5533\"}}' {base}/v1/tokens"
            );
            println!("# read it, reveal it, delete it");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533"
            );
            println!(
                "{curl} -X POST -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533/reveal"
            );
            println!(
                "{curl} -X DELETE -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533"
            );
            println!();
            crate::sandbox::print_demo_lines(&curl, shop, &base, DEMO_PREFIX, sandbox);
            println!();
            println!("Ctrl-C stops the vault cleanly.");
            let _ = stdout.flush();
        },
    )
}

//! An in-memory product cache that herald keeps fresh on every instance of a web service. In a
//! directory with a secret (`herald keygen herald.secret`), run `cargo run --example axum_cache
//! -- 8080 127.0.0.1:7001 127.0.0.1:7002` and `-- 8081 127.0.0.1:7002 127.0.0.1:7001`.
#![allow(clippy::disallowed_types)]
use axum::extract::{Path, State};
use futures_util::StreamExt;
use herald::{Event, EventId, Router, stream::Item};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Cache = Arc<Mutex<HashMap<String, String>>>;

/// The cache, and the event that tells every instance a product changed.
#[derive(Clone)]
struct App(Cache, Event);

async fn get_product(State(App(cache, _)): State<App>, Path(id): Path<String>) -> String {
    let load = || format!("product {id}, from the database\n"); // what the cache saves
    let mut cache = cache.lock().unwrap();
    cache.entry(id.clone()).or_insert_with(load).clone()
}

async fn change_product(State(app): State<App>, Path(id): Path<String>, body: String) -> String {
    // The database write goes here; then every instance, this one too, drops its copy.
    match app.1.raise(id.as_bytes()) {
        Ok(()) => format!("product {id} is now {body:?}\n"),
        Err(e) => format!("changed, but the invalidation was refused: {e}\n"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [http_port, bind, peers @ ..] = &args[..] else {
        return Err("usage: axum_cache HTTP_PORT HERALD_BIND [PEER...]".into());
    };
    let mut herald = Router::builder().secret_file("herald.secret");
    for peer in peers {
        herald = herald.udp_peer(peer.parse()?);
    }
    let herald = herald.cluster("shop").udp_bind(bind.parse()?).build()?;
    let changed = EventId::from_name("product.changed");
    let (cache, mut events) = (Cache::default(), herald.events(changed));
    let app = App(Arc::clone(&cache), herald.event(changed));
    tokio::spawn(async move {
        while let Some(item) = events.next().await {
            let mut cache = cache.lock().unwrap();
            match item {
                Item::Event(m) => drop(cache.remove(&*String::from_utf8_lossy(&m.payload))),
                _ => cache.clear(), // Missed: any product may have changed
            }
        }
    });
    let route = axum::routing::get(get_product).post(change_product);
    let web = axum::Router::new().route("/product/{id}", route);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port.parse()?)).await?;
    Ok(axum::serve(listener, web.with_state(app)).await?)
}

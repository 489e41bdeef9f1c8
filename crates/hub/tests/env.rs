//! `fetch` with no options: `HF_HOME` and `HF_ENDPOINT` decide the cache and
//! the server. The only test of its binary, since it sets the environment.

mod fake_hub;

use std::collections::HashMap;

use fake_hub::FakeHub;
use resnet_hub::{fetch, WeightsSource};

#[test]
fn fetch_uses_hf_home_and_hf_endpoint_then_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let content = b"any bytes: fetch does not read them".to_vec();
    let hub = FakeHub::start(HashMap::from([(
        ("test/env".to_string(), "sub/weights.bin".to_string()),
        content.clone(),
    )]));
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_ENDPOINT", hub.endpoint());
    let source = WeightsSource::parse("hf:test/env/sub/weights.bin").unwrap();

    let path = fetch(&source, None).unwrap();
    assert!(
        path.starts_with(home.path().join("hub")),
        "{}",
        path.display()
    );
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(hub.stop(), 2);

    // Offline, whatever the endpoint: the cache answers.
    assert_eq!(fetch(&source, Some("http://127.0.0.1:9")).unwrap(), path);
}

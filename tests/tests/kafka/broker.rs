//! The test harness's Kafka-protocol broker: a real process that answers on its port, goes down
//! with `stop()` and comes back on the same port with `start()`.

use lathe_tests::kafka::{api_versions, KafkaBroker};

#[test]
fn the_broker_answers_goes_down_and_comes_back_on_its_port() {
    let mut broker = KafkaBroker::new().expect("start the broker");
    let port = broker.port();
    api_versions(port).expect("the broker answers ApiVersions");
    assert!(broker.is_running());

    broker.stop().expect("stop");
    assert!(!broker.is_running());
    assert!(
        api_versions(port).is_err(),
        "a stopped broker answers nothing"
    );

    broker.start().expect("start again");
    assert_eq!(broker.port(), port, "same port");
    api_versions(port).expect("the broker answers again");
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));
}

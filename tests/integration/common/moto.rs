//! A DynamoDB-compatible server for tests: moto in server mode on a free 127.0.0.1 port, with
//! an SDK client to create tables and write items. Stopped when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodb::Client;

pub struct Moto {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub client: Client,
}

/// The Python of moto's virtualenv, which has boto3.
pub fn python() -> PathBuf {
    moto_server().with_file_name("python")
}

/// Where `make test` installs moto; `MOTO_SERVER` overrides.
fn moto_server() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server")
        })
}

fn spawn(addr: SocketAddr) -> Child {
    let bin = moto_server();
    Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} ({e}); `make test` installs it", bin.display()))
}

fn wait_until_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const TEST_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

impl Moto {
    pub async fn start() -> Moto {
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let child = spawn(addr);
        wait_until_up(addr);
        let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test");
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{addr}"))
            .credentials_provider(creds)
            .build();
        Moto {
            child: Some(child),
            addr,
            client: Client::from_conf(conf),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the server; its data is gone with it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(self.addr));
        wait_until_up(self.addr);
    }

    pub async fn create_table(&self, name: &str, key: &str) {
        self.create_table_streamed(name, key, None).await;
    }

    /// A table keyed by the string `key`, with a stream of `view` when one is given.
    pub async fn create_table_streamed(&self, name: &str, key: &str, view: Option<StreamViewType>) {
        let stream = view.map(|view| {
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .unwrap()
        });
        self.client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .set_stream_specification(stream)
            .send()
            .await
            .expect("create table");
    }

    /// The default tables of NOTES 1.2.
    pub async fn create_default_tables(&self) {
        self.create_table("webordinary-edit-sessions", "sessionId")
            .await;
        self.create_table("webordinary-containers", "containerId")
            .await;
    }

    pub async fn put(&self, table: &str, attrs: &[(&str, AttributeValue)]) {
        let mut req = self.client.put_item().table_name(table);
        for (k, v) in attrs {
            req = req.item(*k, v.clone());
        }
        req.send().await.expect("put item");
    }

    pub async fn put_session(&self, key: &str, container: &str) {
        self.put(
            "webordinary-edit-sessions",
            &[("sessionId", s(key)), ("containerId", s(container))],
        )
        .await;
    }

    pub async fn put_container(&self, id: &str, addr: SocketAddr) {
        self.put(
            "webordinary-containers",
            &[
                ("containerId", s(id)),
                ("containerIp", s(&addr.ip().to_string())),
                ("containerPort", n(&addr.port().to_string())),
                ("status", s("running")),
            ],
        )
        .await;
    }

    /// A container the platform has stopped: a status and no address.
    pub async fn put_stopped_container(&self, id: &str) {
        self.put(
            "webordinary-containers",
            &[("containerId", s(id)), ("status", s("stopped"))],
        )
        .await;
    }

    /// The sessions item of `key` as stored now, read consistently.
    pub async fn session_item(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name("webordinary-edit-sessions")
            .key("sessionId", s(key))
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    /// A numeric attribute of the sessions item of `key`, if both exist.
    pub async fn session_number(&self, key: &str, attribute: &str) -> Option<u64> {
        let item = self.session_item(key).await?;
        item.get(attribute)?.as_n().ok()?.parse().ok()
    }

    /// An SQS client of this server (moto serves SQS on the same port).
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test");
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    pub async fn delete_session(&self, key: &str) {
        self.client
            .delete_item()
            .table_name("webordinary-edit-sessions")
            .key("sessionId", s(key))
            .send()
            .await
            .expect("delete item");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

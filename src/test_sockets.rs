//! Unit-test support: connected loopback TCP sockets, for code that owns real streams.

use tokio::net::{TcpListener, TcpStream};

/// Two ends of one loopback connection: (the connecting end, the accepted end).
pub async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("listener address");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

//! An axum app served on a thread and runtime of its own: stopping it ends every connection it
//! holds, as a stopped container does, and it can be dropped from inside a test's async context.

use std::net::SocketAddr;

use tokio::sync::oneshot;

pub struct Served {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Binds `addr` (port 0 for a free one) and serves `app` there until stopped or dropped.
    pub fn start(addr: SocketAddr, app: axum::Router) -> Served {
        let listener = std::net::TcpListener::bind(addr).expect("bind test server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("test server addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Served {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops serving and closes every open connection.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

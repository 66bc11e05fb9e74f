//! A stand-in for the network between the demo's page and ticketgate, so the page can show
//! a resume: a TCP forwarder to ticketgate's listener whose `cut` resets every connection
//! through it at once, as a phone changing networks would (no close frame either way).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The forwarder: where it listens, and the signal that cuts what goes through it.
pub struct Network {
    pub listen: SocketAddr,
    cuts: watch::Sender<u64>,
    cut_count: AtomicU64,
    live: Mutex<usize>,
}

impl Network {
    pub fn new(listen: SocketAddr) -> Self {
        Network {
            listen,
            cuts: watch::channel(0).0,
            cut_count: AtomicU64::new(0),
            live: Mutex::new(0),
        }
    }

    /// Forwards each connection `listener` accepts to `gate`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, gate: SocketAddr) {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(self.clone().forward(client, gate));
        }
    }

    /// Resets every connection through the forwarder; how many there were.
    pub fn cut(&self) -> usize {
        let live = *self.live.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.cut_count.fetch_add(1, Ordering::SeqCst) + 1;
        self.cuts.send_replace(n);
        live
    }

    async fn forward(self: Arc<Self>, mut client: TcpStream, gate: SocketAddr) {
        let Ok(mut upstream) = TcpStream::connect(gate).await else {
            return;
        };
        let mut cuts = self.cuts.subscribe();
        cuts.mark_unchanged();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cuts.changed() => {
                // SO_LINGER 0: the close resets the connection, as a dead network path does.
                let _ = client.set_zero_linger();
                let _ = upstream.set_zero_linger();
            }
        }
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

//! A stand-in for the network between the demo's page and ticketgate, so the page can show
//! a resume: a TCP forwarder to ticketgate's listener whose `cut` resets every connection
//! through it at once, as a phone changing networks would (no close frame either way).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The forwarder: where it listens, and the signal that cuts what goes through it.
pub struct Network {
    pub listen: SocketAddr,
    /// Each send cuts the connections open then.
    cuts: watch::Sender<()>,
    live: AtomicUsize,
}

impl Network {
    pub fn new(listen: SocketAddr) -> Self {
        Network {
            listen,
            cuts: watch::channel(()).0,
            live: AtomicUsize::new(0),
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
        let live = self.live.load(Ordering::SeqCst);
        self.cuts.send_replace(());
        live
    }

    async fn forward(self: Arc<Self>, mut client: TcpStream, gate: SocketAddr) {
        let Ok(mut upstream) = TcpStream::connect(gate).await else {
            return;
        };
        // A new receiver has seen the current value: only a later cut wakes it.
        let mut cuts = self.cuts.subscribe();
        self.live.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cuts.changed() => {
                // SO_LINGER 0: the close resets the connection, as a dead network path does.
                let _ = client.set_zero_linger();
                let _ = upstream.set_zero_linger();
            }
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

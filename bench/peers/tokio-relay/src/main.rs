//! `tokio-relay LISTEN SERVER`: accepts on LISTEN and forwards each
//! connection to SERVER with `tokio::io::copy_bidirectional`, one task per
//! connection, on a current_thread runtime. TCP_NODELAY on both sides, as
//! HAProxy does. Stops on SIGTERM or SIGINT.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

async fn serve(mut client: TcpStream, server: SocketAddr) {
    let mut upstream = match TcpStream::connect(server).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokio-relay: connect {server}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: tokio-relay LISTEN_ADDR SERVER_ADDR");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().expect("LISTEN_ADDR");
    let server: SocketAddr = args[2].parse().expect("SERVER_ADDR");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        tokio::spawn(serve(sock, server));
                    }
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        eprintln!("tokio-relay: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok(())
    })
}

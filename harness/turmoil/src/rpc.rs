//! One request line, one response line, one TCP connection: the smallest HTTP-like exchange that
//! still crosses turmoil's network (and so can be delayed, lost, partitioned or reset).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use turmoil::net::{TcpListener, TcpStream};

pub const PORT: u16 = 80;
/// A client gives up on a request after this long (simulated time), as `httpx`'s timeout does.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// Upper bound on one request or response line.
const MAX_LINE: usize = 256;

/// Send `request` to `host` and wait for its one-line answer.
pub async fn call(host: &str, request: &str) -> io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, PORT)).await?;
        stream.write_all(format!("{request}\n").as_bytes()).await?;
        read_line(&mut BufReader::new(stream)).await
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{host}: no answer to `{request}`")))?
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.is_empty() || line.len() > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no complete line"));
    }
    Ok(line.trim_end().to_string())
}

/// Serve requests on [`PORT`], each connection in a task of its own, answering with `handle`.
pub async fn serve<F, Fut>(handle: F) -> turmoil::Result
where
    F: Fn(String) -> Fut + 'static,
    Fut: Future<Output = String> + 'static,
{
    let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let handle = Rc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = Rc::clone(&handle);
        tokio::task::spawn_local(async move {
            let mut stream = BufReader::new(stream);
            if let Ok(request) = read_line(&mut stream).await {
                let response = handle(request).await;
                // The caller may be gone (timed out, crashed): nobody to tell.
                let _ = stream.get_mut().write_all(format!("{response}\n").as_bytes()).await;
            }
        });
    }
}

//! Many Server-Sent-Event subscribers to `/v1/watch/...` in one process: each is a tokio task on
//! a raw keep-alive TCP connection that decodes the chunked body and reports every event it reads
//! as a [`Receipt`], stamped the moment its bytes arrived.

use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::fanout::Receipt;

/// How many subscriptions are opened at the same time.
const CONNECT_CONCURRENCY: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open SSE subscriptions; dropping this closes them all.
pub(crate) struct SseSubscribers {
    tasks: Vec<JoinHandle<()>>,
}

impl SseSubscribers {
    /// Opens `count` subscriptions to `GET path`, subscriber `i` on `addrs[i % addrs.len()]`, and
    /// returns once every one has its response head (so later changes are in every stream).
    pub(crate) fn connect(
        runtime: &Runtime,
        addrs: &[String],
        path: &str,
        count: usize,
        receipts: &Sender<Receipt>,
    ) -> anyhow::Result<SseSubscribers> {
        let addrs: Vec<SocketAddr> = addrs
            .iter()
            .map(|a| a.parse().with_context(|| format!("bad address {a}")))
            .collect::<anyhow::Result<_>>()?;
        let opened: Vec<anyhow::Result<JoinHandle<()>>> = runtime.block_on(async {
            futures::stream::iter(0..count)
                .map(|i| {
                    let (addr, receipts) = (addrs[i % addrs.len()], receipts.clone());
                    async move {
                        let body = open(addr, path).await?;
                        Ok(tokio::spawn(read_events(i, body, receipts)))
                    }
                })
                .buffer_unordered(CONNECT_CONCURRENCY)
                .collect()
                .await
        });
        let mut subscribers = SseSubscribers { tasks: Vec::new() };
        let mut first_error = None;
        for task in opened {
            match task {
                Ok(task) => subscribers.tasks.push(task),
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        match first_error {
            Some(err) => Err(err), // dropping `subscribers` closes those that opened
            None => Ok(subscribers),
        }
    }
}

impl Drop for SseSubscribers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// An SSE response body after its head.
struct Body {
    reader: BufReader<TcpStream>,
    chunked: bool,
}

async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Body> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
    let stream = connect
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    reader.get_mut().write_all(head.as_bytes()).await?;
    let (mut status_line, mut chunked) = (String::new(), false);
    tokio::time::timeout(CONNECT_TIMEOUT, reader.read_line(&mut status_line))
        .await
        .with_context(|| format!("no answer from {addr} to GET {path}"))??;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        let line = line.to_ascii_lowercase();
        chunked |= line.starts_with("transfer-encoding:") && line.contains("chunked");
    }
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path} on {addr} answered {:?}", status_line.trim());
    }
    Ok(Body { reader, chunked })
}

/// Reads events until the stream ends or the task is aborted.
async fn read_events(subscriber: usize, mut body: Body, receipts: Sender<Receipt>) {
    let mut lines = LineSplitter::default();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = if body.chunked {
            read_chunk(&mut body.reader, &mut buffer).await
        } else {
            body.reader
                .read(&mut buffer)
                .await
                .map(|n| (n > 0).then_some(n))
        };
        let Ok(Some(read)) = read else { return };
        let at = Instant::now();
        for seq in lines.push(&buffer[..read]) {
            if receipts
                .send(Receipt {
                    subscriber,
                    seq,
                    at,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// One chunk of a chunked body into `buffer` (grown as needed); `None` at the end of the body.
async fn read_chunk(
    reader: &mut BufReader<TcpStream>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    let mut size_line = String::new();
    while size_line.trim().is_empty() {
        size_line.clear();
        if reader.read_line(&mut size_line).await? == 0 {
            return Ok(None);
        }
    }
    let size = size_line.trim().split(';').next().unwrap_or("");
    let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
    if size == 0 {
        return Ok(None);
    }
    if buffer.len() < size {
        buffer.resize(size, 0);
    }
    reader.read_exact(&mut buffer[..size]).await?;
    Ok(Some(size))
}

/// Splits the body into lines and returns the `value` (a sequence number) of each `data:` line.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<u64> {
        self.partial.extend_from_slice(bytes);
        let mut seqs = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let Some(data) = line.strip_prefix(b"data:") {
                let event: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
                seqs.extend(event.get("value").and_then(serde_json::Value::as_u64));
            }
        }
        seqs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lines_split_anywhere_give_their_values() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"id: 7\ndata: {\"key\":\"/a\",\"va").is_empty());
        assert_eq!(lines.push(b"lue\":3,\"op\":\"put\"}\n\n:\n"), vec![3]);
        let snapshot = b"data: {\"op\":\"snapshot\",\"entries\":[]}\n\ndata: {\"value\":4}\n\n";
        assert_eq!(lines.push(snapshot), vec![4]);
    }
}

//! HAProxy's CLI over its UNIX sockets, spoken directly: the admin (stats) socket for the runtime
//! API (`show servers state`, `set server`), the master socket for `reload` and `show proc`.

use crate::actions::ActionError;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest one CLI exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reload may take until the new worker answers.
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

/// Sends one command line (several may be joined with `;`), closes the writing half and reads
/// the answer to the end.
pub async fn exchange(socket: &Path, command: &str) -> Result<String, ActionError> {
    let io = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        // The master CLI answers once the client closed its half (as socat does).
        stream.shutdown().await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, io).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(ActionError::Socket {
            socket: socket.to_path_buf(),
            detail: e.to_string(),
        }),
        Err(_) => Err(ActionError::Socket {
            socket: socket.to_path_buf(),
            detail: format!("no answer to {command:?}"),
        }),
    }
}

/// One server of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveServer {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// Not in maintenance (forced, inherited or by resolution).
    pub enabled: bool,
}

/// Parses `show servers state <backend>` (format 1: a header line names the columns).
pub fn parse_servers_state(text: &str) -> Result<Vec<LiveServer>, ActionError> {
    let header = text
        .lines()
        .find_map(|line| line.strip_prefix("# "))
        .ok_or_else(|| {
            ActionError::Haproxy(format!(
                "unexpected answer to show servers state: {}",
                text.trim()
            ))
        })?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| ActionError::Haproxy(format!("show servers state has no column {name}")))
    };
    let (name, addr, port, admin) = (
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_port")?,
        column("srv_admin_state")?,
    );
    let mut servers = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with('#') || fields.len() < columns.len() {
            continue;
        }
        let admin_state: u32 = fields[admin]
            .parse()
            .map_err(|_| ActionError::Haproxy(format!("bad srv_admin_state in {line:?}")))?;
        servers.push(LiveServer {
            name: fields[name].to_string(),
            addr: fields[addr].to_string(),
            port: fields[port].parse().unwrap_or(0),
            // FMAINT 0x01, IMAINT 0x02, RMAINT 0x20; CMAINT (0x04, `disabled` in the file) stays
            // set after `state ready`, so it does not count.
            enabled: admin_state & 0x23 == 0,
        });
    }
    Ok(servers)
}

/// The servers of `backend`; `Ok(None)` when HAProxy has no such backend (it runs an older file).
pub async fn servers(socket: &Path, backend: &str) -> Result<Option<Vec<LiveServer>>, ActionError> {
    let answer = exchange(socket, &format!("show servers state {backend}")).await?;
    if answer.contains("Can't find backend") {
        return Ok(None);
    }
    parse_servers_state(&answer).map(Some)
}

/// `(reloads, failed reloads)` from the master's `show proc`.
fn reload_counters(show_proc: &str) -> Option<(u64, u64)> {
    let line = show_proc.lines().find(|l| l.contains("master"))?;
    let mut fields = line.split_whitespace().skip(2);
    let reloads = fields.next()?.parse().ok()?;
    let failed = show_proc
        .split("[failed: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some((reloads, failed))
}

/// Reloads through the master socket and waits until the master counted the reload; an
/// increased failure count is an error (the old workers keep serving then).
pub async fn master_reload(master: &Path) -> Result<(), ActionError> {
    let before = reload_counters(&exchange(master, "show proc").await?).ok_or_else(|| {
        ActionError::Haproxy("cannot read the reload count from show proc".to_string())
    })?;
    // The master re-executes itself and closes this session; its answer is not awaited.
    let _ = exchange(master, "reload").await;
    let deadline = Instant::now() + RELOAD_DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(answer) = exchange(master, "show proc").await {
            if let Some((reloads, failed)) = reload_counters(&answer) {
                if failed > before.1 {
                    return Err(ActionError::Haproxy(
                        "haproxy refused the reload (see its log); the old workers keep serving"
                            .to_string(),
                    ));
                }
                if reloads > before.0 {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ActionError::Haproxy(format!(
                "the reload was not counted within {RELOAD_DEADLINE:?}"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
        srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result \
        srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn \
        srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr \
            srv_agent_port\n\
        3 lb 1 lathe1 127.0.0.1 2 4 1 1 0 1 0 2 6 0 0 0 - 18081 - 0 0 - - 0\n\
        3 lb 2 lathe2 127.0.0.1 0 5 1 1 1 1 0 0 14 0 0 0 - 1 - 0 0 - - 0\n\n";

    #[test]
    fn parses_server_state_by_column_name() {
        let servers = parse_servers_state(STATE).unwrap();
        assert_eq!(
            servers,
            vec![
                LiveServer {
                    name: "lathe1".into(),
                    addr: "127.0.0.1".into(),
                    port: 18081,
                    enabled: true
                },
                LiveServer {
                    name: "lathe2".into(),
                    addr: "127.0.0.1".into(),
                    port: 1,
                    enabled: false
                },
            ]
        );
        assert!(parse_servers_state("Unknown command.\n").is_err());
    }

    #[test]
    fn reads_reload_counters() {
        let proc_ = "#<PID> <type> <reloads> <uptime> <version>\n\
            17112 master 3 [failed: 1] 0d00h00m05s 2.6.12\n# workers\n";
        assert_eq!(reload_counters(proc_), Some((3, 1)));
    }
}

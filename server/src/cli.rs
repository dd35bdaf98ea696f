//! `cairn` subcommands besides serving: `cairn config show|check|status`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  cairn config show [--sources] [server flags...]   print the effective configuration
  cairn config check FILE...                        validate config files (like nginx -t)
  cairn config status [--endpoint URL]              a running member's last reload outcome";

pub fn config_command(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("show") => show(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("status") => status(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn show(args: &[String]) -> ExitCode {
    let sources = args.iter().any(|a| a == "--sources");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--sources").collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    match cairn_config::parse(rest, env) {
        Ok(cairn_config::Invocation::Serve(cfg)) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", cairn_config::show(&cfg, sources));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let paths: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let report = cairn_config::check(&paths);
    print!("{report}");
    ExitCode::from(report.exit_code() as u8)
}

fn status(args: &[String]) -> ExitCode {
    let endpoint = match args {
        [] => "http://127.0.0.1:2379".to_string(),
        [flag, url] if flag == "--endpoint" => url.clone(),
        [a] if a.starts_with("--endpoint=") => a["--endpoint=".len()..].to_string(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match http_get(&endpoint, "/config/status") {
        Ok(body) => {
            println!("{body}");
            let ok = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["last_reload_successful"].as_bool())
                .unwrap_or(false);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cairn: cannot reach {endpoint}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bounded plain-HTTP GET (the admin endpoints speak HTTP/1.1).
fn http_get(endpoint: &str, path: &str) -> std::io::Result<String> {
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_string(),
        ));
    }
    Ok(body.to_string())
}

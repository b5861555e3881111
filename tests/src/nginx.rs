//! A real nginx (Debian's `nginx-light`) in a namespace: one process
//! (`master_process off`), `return 200 "ok"` on one address, and the
//! `keepalive_timeout` the test chooses (the server side of keep-alive
//! incidents).

use std::{net::SocketAddr, process::Stdio};

use crate::{Netns, diagnose::Guard, host::ScratchDir, sockets::wait_listening};

/// nginx running in a namespace; on drop it is killed (with anything it
/// forked) and its directory (config, pid file, logs, temp paths) removed.
pub struct Nginx {
    _process: Guard,
    _dir: ScratchDir,
}

impl Nginx {
    /// Starts nginx in `ns` on `listen` with `keepalive_timeout` (nginx
    /// syntax: `1s`) and waits until it accepts a connection (10 s at
    /// most; that probe connection is made before any tracing starts).
    pub fn start(ns: &Netns, listen: SocketAddr, keepalive_timeout: &str) -> Nginx {
        let dir = ScratchDir::new(&format!("nginx-{}", ns.name()));
        let d = dir.path().display();
        let config = dir.path().join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\n\
                 error_log {d}/error.log;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  keepalive_timeout {keepalive_timeout};\n\
                   client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                   server {{\n    listen {listen};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
            ),
        )
        .expect("write nginx.conf");
        let process = Guard(
            ns.command("nginx")
                .arg("-c")
                .arg(&config)
                .arg("-p")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx (apt-get install nginx-light)"),
        );
        let error_log = dir.path().join("error.log");
        ns.run(|| {
            wait_listening(listen, || {
                format!(
                    "nginx: {}",
                    std::fs::read_to_string(&error_log).unwrap_or_default()
                )
            })
        });
        Nginx {
            _process: process,
            _dir: dir,
        }
    }
}

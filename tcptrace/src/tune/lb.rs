//! Load-balancer configuration that agrees with a sysctl profile: the
//! listen backlog is the profile's somaxconn, TCP keepalive starts before
//! the idle timeout, and the comments state the two rules that avoid
//! resets on pooled connections (diagnosis causes 1 and 7): clients idle
//! out before the proxy does, backends after it.

use std::time::Duration;

use super::profile::{LoadBalancer, TuneProfile};
use super::{
    plan::keepalive_below,
    settings::{self, KEEPALIVE_INTVL, KEEPALIVE_PROBES, KEEPALIVE_TIME, SOMAXCONN},
};

/// The figures a snippet takes from the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbTuning {
    pub idle: Duration,
    pub backlog: u64,
    pub keepalive_time: u64,
    pub keepalive_intvl: u64,
    pub keepalive_probes: u64,
}

impl LbTuning {
    pub fn for_profile(profile: TuneProfile, idle: Duration) -> LbTuning {
        let value = |key: &str, fallback: u64| {
            settings::find(key)
                .and_then(|s| s.recommended(profile))
                .and_then(|v| v.parse().ok())
                .unwrap_or(fallback)
        };
        let profile_keepalive = value(KEEPALIVE_TIME, 7200).to_string();
        LbTuning {
            idle,
            backlog: value(SOMAXCONN, 4096),
            keepalive_time: keepalive_below(idle, &profile_keepalive)
                .0
                .parse()
                .unwrap_or(1),
            keepalive_intvl: value(KEEPALIVE_INTVL, 75),
            keepalive_probes: value(KEEPALIVE_PROBES, 9),
        }
    }
}

/// `50s`, or `1500ms` when not whole seconds; both servers read these.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub fn snippet(lb: LoadBalancer, profile: TuneProfile, t: &LbTuning) -> String {
    let idle = duration(t.idle);
    // Clients must give up an idle connection first, backends last; a
    // sixth of the timeout (at least 1 s) on either side covers clock
    // granularity and a request in flight.
    let margin = Duration::from_secs((t.idle.as_secs() / 6).max(1));
    let client_idle = duration(
        t.idle
            .saturating_sub(margin)
            .max(Duration::from_millis(500)),
    );
    let backend_idle = duration(t.idle + margin);
    let header = format!(
        "# {name} for a {idle} idle timeout, consistent with `tcptrace tune --profile {profile} \
         --idle-timeout {idle}`\n\
         # which sets net.core.somaxconn = {backlog} (the backlog below) and TCP keepalive \
         {time}s/{intvl}s/{probes}.\n\
         # Clients that pool connections through it: close idle ones sooner (idle timeout <= {client_idle}).\n\
         # Backends: keep idle connections open longer (keep-alive timeout >= {backend_idle}),\n\
         # or a connection they close can be reused by the proxy and reset.\n",
        name = match lb {
            LoadBalancer::Haproxy => "HAProxy",
            LoadBalancer::Nginx => "nginx",
        },
        profile = profile.name(),
        backlog = t.backlog,
        time = t.keepalive_time,
        intvl = t.keepalive_intvl,
        probes = t.keepalive_probes,
    );
    let body = match lb {
        LoadBalancer::Haproxy => format!(
            "defaults\n\
             \x20   mode http\n\
             \x20   option http-keep-alive\n\
             \x20   # TCP keepalive on both sides, timed by the sysctls above.\n\
             \x20   option tcpka\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client {idle}\n\
             \x20   timeout http-keep-alive {idle}\n\
             \x20   timeout server {idle}\n\
             \n\
             frontend main\n\
             \x20   bind :80 backlog {backlog}\n\
             \x20   default_backend app\n\
             \n\
             backend app\n\
             \x20   http-reuse safe\n\
             \x20   server app1 127.0.0.1:8080\n",
            backlog = t.backlog,
        ),
        LoadBalancer::Nginx => format!(
            "http {{\n\
             \x20   keepalive_timeout {idle};\n\
             \n\
             \x20   upstream app {{\n\
             \x20       server 127.0.0.1:8080;\n\
             \x20       keepalive 64;\n\
             \x20       keepalive_timeout {idle};\n\
             \x20   }}\n\
             \n\
             \x20   server {{\n\
             \x20       listen 80 backlog={backlog} so_keepalive={time}s:{intvl}s:{probes};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://app;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_connect_timeout 5s;\n\
             \x20           proxy_read_timeout {idle};\n\
             \x20           proxy_send_timeout {idle};\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            backlog = t.backlog,
            time = t.keepalive_time,
            intvl = t.keepalive_intvl,
            probes = t.keepalive_probes,
        ),
    };
    format!("{header}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_snippet_follows_the_profile() {
        let tuning = LbTuning::for_profile(TuneProfile::Proxy, Duration::from_secs(50));
        assert_eq!(tuning.backlog, 16384);
        assert_eq!(tuning.keepalive_time, 37, "three quarters of 50 s");
        let text = snippet(LoadBalancer::Haproxy, TuneProfile::Proxy, &tuning);
        for line in [
            "    timeout client 50s\n",
            "    timeout http-keep-alive 50s\n",
            "    timeout server 50s\n",
            "    bind :80 backlog 16384\n",
            "    option tcpka\n",
            "--profile proxy --idle-timeout 50s",
            "net.core.somaxconn = 16384",
            "TCP keepalive 37s/15s/4",
            "idle timeout <= 42s",
            "keep-alive timeout >= 58s",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn nginx_snippet_follows_the_profile() {
        let tuning = LbTuning::for_profile(TuneProfile::LbBackend, Duration::from_millis(4500));
        let text = snippet(LoadBalancer::Nginx, TuneProfile::LbBackend, &tuning);
        for line in [
            "    keepalive_timeout 4500ms;\n",
            "listen 80 backlog=8192 so_keepalive=3s:15s:4;",
            "proxy_read_timeout 4500ms;",
            "idle timeout <= 3500ms",
            "keep-alive timeout >= 5500ms",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert_eq!(
            text.matches('{').count(),
            text.matches('}').count(),
            "balanced braces"
        );
    }

    #[test]
    fn long_idle_timeouts_keep_the_profile_keepalive() {
        let tuning = LbTuning::for_profile(TuneProfile::Default, Duration::from_secs(3600));
        assert_eq!(tuning.keepalive_time, 600);
    }
}

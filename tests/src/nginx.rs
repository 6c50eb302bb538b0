//! A real nginx, as a caching proxy in front of a server (serving packs cached in 1 MiB slices
//! with the slice module, the usual setup for large files; everything else as the server's
//! own caching headers say) or as a plain web server of a static copy. Its access log records
//! each request's cache status.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its access log: `STATUS CACHE_STATUS METHOD URI RANGE` per line.
    pub access_log: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1 in front of `upstream` (`http://HOST:PORT`),
    /// with its configuration, cache and logs under `dir`.
    pub fn start(upstream: &str, dir: &Path) -> Nginx {
        let up = upstream.trim_start_matches("http://");
        let locations = format!(
            r#"
        location /v1/packs/ {{
            slice 1m;
            proxy_cache imaged;
            proxy_cache_key $uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 1y;
            proxy_pass http://{up};
        }}
        location / {{
            proxy_cache imaged;
            proxy_pass http://{up};
        }}"#
        );
        Nginx::start_with(&locations, dir)
    }

    /// Starts nginx serving the files under `root` as they are: a static copy of a repository
    /// on a plain web server.
    pub fn start_static(root: &Path, dir: &Path) -> Nginx {
        Nginx::start_with(&format!("location / {{ root {}; }}", root.display()), dir)
    }

    fn start_with(locations: &str, dir: &Path) -> Nginx {
        fs::create_dir_all(dir.join("cache")).unwrap();
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.display();
        let user = if nix::unistd::Uid::effective().is_root() { "user root;" } else { "" };
        let conf = format!(
            r#"{user}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format cache '$status $upstream_cache_status $request_method $uri $http_range';
    access_log {d}/access.log cache;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=imaged:10m max_size=4g inactive=1d use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        {locations}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx runs (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}: {}", fs::read_to_string(dir.join("error.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, url: format!("http://127.0.0.1:{port}"), access_log: dir.join("access.log") }
    }

    /// The access log's lines so far.
    pub fn log(&self) -> Vec<String> {
        fs::read_to_string(&self.access_log).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

# Shared by scripts/bench-proxy.sh, scripts/profile-proxy.sh and scripts/count-proxy.sh (sourced, not run): loopback
# ports, processes stopped by PID on exit, and the configurations of the JSON upstream (nginx)
# and of token-handler in front of it.

TMP=$(mktemp -d); PIDS=()
# The files go only once the processes have (up to 5 s): a token-handler still shutting down
# would otherwise see its configuration file vanish and log a refused reload.
cleanup() {
  local p alive
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

nginx_conf() { # dir workers master(on|off) server-blocks
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<NGINX
daemon off; master_process $3; worker_processes $2; pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/b; proxy_temp_path $1/p; fastcgi_temp_path $1/f;
  uwsgi_temp_path $1/u; scgi_temp_path $1/s;
  keepalive_requests 100000;
  # A 16 KB access token travels as one Authorization header (8 KB by default).
  large_client_header_buffers 4 32k;
  $4
}
NGINX
}

# The upstream every target reaches: a small JSON answer, one nginx process of its own.
upstream_conf() { # dir port
  nginx_conf "$1" 1 off "server { listen 127.0.0.1:$2; location / { default_type application/json; return 200 '{\"orders\":[1,2,3]}'; } }"
}

# token-handler proxying /api to the upstream; the provider is never called (the cookie is made
# by examples/seal_cookie.rs).
th_conf() { # file listen-port upstream-port workers key
  cat > "$1" <<TOML
[server]
listen = "127.0.0.1:$2"
workers = $4
[cookies]
keys = ["$5"]
[web]
trusted_origins = ["https://www.example.test"]
[[providers]]
id = "default"
issuer = "http://127.0.0.1:1"
client_id = "bench"
client_secret = "bench"
redirect_uri = "https://www.example.test/"
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:$3"
TOML
}

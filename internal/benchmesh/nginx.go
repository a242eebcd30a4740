package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startNginxPair starts nginx A (plain HTTP in, TLS 1.3 mTLS out) and
// nginx B (TLS 1.3 mTLS in, plain HTTP to the app), each its own master
// with a worker per core and keep-alive pools, certificates from a
// throwaway CA (ECDSA P-256, like the mesh's). It returns A's address.
func startNginxPair(dir, bin, app string, start func(string, []string, ...string) (*exec.Cmd, error)) (string, error) {
	nd := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(nd, "tmp"), 0o755); err != nil {
		return "", err
	}
	if err := writePKI(nd); err != nil {
		return "", err
	}
	aPort, bPort := freePort(), freePort()
	common := `worker_processes auto;
daemon off;
events { worker_connections 4096; }
`
	httpCommon := fmt.Sprintf(`access_log off;
client_body_temp_path %[1]s/tmp;
proxy_temp_path %[1]s/tmp;
fastcgi_temp_path %[1]s/tmp;
uwsgi_temp_path %[1]s/tmp;
scgi_temp_path %[1]s/tmp;
keepalive_requests 1000000;
`, nd)
	a := common + fmt.Sprintf(`pid %[1]s/a.pid;
error_log %[1]s/a-error.log warn;
http {
%[2]s
upstream b { server 127.0.0.1:%[3]s; keepalive 64; keepalive_requests 1000000; }
server {
  listen 127.0.0.1:%[4]s;
  location / {
    proxy_pass https://b;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_ssl_certificate %[1]s/a.pem;
    proxy_ssl_certificate_key %[1]s/a.key;
    proxy_ssl_trusted_certificate %[1]s/ca.pem;
    proxy_ssl_verify on;
    proxy_ssl_name nginx-b;
    proxy_ssl_server_name on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_session_reuse on;
  }
}
}
`, nd, httpCommon, bPort, aPort)
	b := common + fmt.Sprintf(`pid %[1]s/b.pid;
error_log %[1]s/b-error.log warn;
http {
%[2]s
upstream app { server %[3]s; keepalive 64; keepalive_requests 1000000; }
server {
  listen 127.0.0.1:%[4]s ssl;
  ssl_certificate %[1]s/b.pem;
  ssl_certificate_key %[1]s/b.key;
  ssl_protocols TLSv1.3;
  ssl_verify_client on;
  ssl_client_certificate %[1]s/ca.pem;
  location / {
    proxy_pass http://app;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
  }
}
}
`, nd, httpCommon, app, bPort)
	for name, conf := range map[string]string{"a": a, "b": b} {
		path := filepath.Join(nd, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return "", err
		}
		if _, err := start(bin, nil, "-p", nd, "-c", path, "-e", filepath.Join(nd, name+"-error.log")); err != nil {
			return "", err
		}
	}
	return "127.0.0.1:" + aPort, nil
}

// nginxPids returns the masters and workers of both nginx instances.
func nginxPids(dir string) []int {
	var masters []int
	for _, name := range []string{"a", "b"} {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			data, err := os.ReadFile(filepath.Join(dir, "nginx", name+".pid"))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && perr == nil {
				masters = append(masters, pid)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pids := append([]int(nil), masters...)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(data)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		ppid, _ := strconv.Atoi(fields[1])
		for _, m := range masters {
			if ppid == m {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// writePKI writes ca.pem, a.pem/a.key (client), b.pem/b.key (server "nginx-b").
func writePKI(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	for i, name := range []string{"a", "b"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "nginx-" + name}, DNSNames: []string{"nginx-" + name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", kder); err != nil {
			return err
		}
	}
	return nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// Command testbox is the one program of the real-node tests' image: static,
// no shell, no libraries. Subcommands:
//
//	run --lines N --message M --exit C   print N lines, write M to /dev/termination-log, exit C
//	serve --port P --text T              answer every HTTP request with T and the host name
//	get [--retry-for D] URL              print the status and body of one HTTP GET (names resolved
//	                                     via /etc/resolv.conf; https with the pod's service account),
//	                                     retrying failed connections for up to D
//	post [--retry-for D] URL BODY        the same with a POST of the JSON BODY
//	sleep                                wait for SIGTERM
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testbox run|serve|get|sleep ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	switch os.Args[1] {
	case "run":
		lines := fs.Int("lines", 3, "lines to print")
		message := fs.String("message", "", "termination message")
		code := fs.Int("exit", 0, "exit code")
		fs.Parse(os.Args[2:])
		for i := 1; i <= *lines; i++ {
			fmt.Printf("testbox line %d\n", i)
		}
		if *message != "" {
			if err := os.WriteFile("/dev/termination-log", []byte(*message), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "termination-log:", err)
			}
		}
		os.Exit(*code)
	case "serve":
		port := fs.Int("port", 8080, "port")
		text := fs.String("text", "hello", "answer")
		fs.Parse(os.Args[2:])
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s from %s\n", *text, host)
		})
		fmt.Printf("serving on :%d\n", *port)
		if err := http.ListenAndServe(fmt.Sprintf(":%d", *port), nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "get", "post":
		retryFor := fs.Duration("retry-for", 0, "keep retrying failed connections this long")
		fs.Parse(os.Args[2:])
		const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
		client := http.Client{Timeout: 30 * time.Second}
		if ca, err := os.ReadFile(sa + "ca.crt"); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		}
		deadline := time.Now().Add(*retryFor)
		for {
			var body io.Reader
			method := "GET"
			if os.Args[1] == "post" {
				method, body = "POST", strings.NewReader(fs.Arg(1))
			}
			req, err := http.NewRequest(method, fs.Arg(0), body)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if method == "POST" {
				req.Header.Set("Content-Type", "application/json")
			}
			if token, err := os.ReadFile(sa + "token"); err == nil && req.URL.Scheme == "https" {
				req.Header.Set("Authorization", "Bearer "+string(token))
			}
			resp, err := client.Do(req)
			if err != nil {
				if time.Now().Before(deadline) {
					time.Sleep(500 * time.Millisecond)
					continue
				}
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Printf("%d %s", resp.StatusCode, data)
			return
		}
	case "sleep":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
	default:
		fmt.Fprintln(os.Stderr, "unknown subcommand", os.Args[1])
		os.Exit(2)
	}
}

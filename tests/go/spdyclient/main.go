// spdyclient: a SPDY/3.1 streaming client for pier's end-to-end tests,
// built on Debian's golang-github-docker-spdystream-dev, the SPDY library
// kubectl's and kubelet's streaming descends from. It does what client-go's
// remotecommand and portforward clients do on the wire, so pier's own SPDY
// code is checked against an implementation it shares nothing with.
//
//	spdyclient exec URL [-stdin] [-stdout] [-stderr] [-tty] [-resize WxH]... [-protocols P,P]
//	spdyclient portforward URL PORT
//
// exec copies its stdin to the stdin stream (closing it at EOF), the stdout
// and stderr streams to its own, then exits with the command's exit code
// from the v4 status (or 125 with the status on stderr). portforward copies
// stdin to one data stream and the data stream to stdout; an error stream
// message goes to stderr and makes it exit 1.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

// bufferedConn reads through the reader that parsed the HTTP response, in
// case frames followed it in the same packet.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdyclient: "+format+"\n", args...)
	os.Exit(125)
}

func upgrade(rawURL string, protocols []string) (*spdystream.Connection, string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		fail("url: %v", err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		fail("dial: %v", err)
	}
	req, _ := http.NewRequest("POST", rawURL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	for _, p := range protocols {
		req.Header.Add("X-Stream-Protocol-Version", p)
	}
	if err := req.Write(conn); err != nil {
		fail("write request: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		fail("read response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(os.Stderr, "HTTP %d: %s", resp.StatusCode, body)
		os.Exit(100 + resp.StatusCode/100)
	}
	spdy, err := spdystream.NewConnection(&bufferedConn{conn, r}, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go spdy.Serve(spdystream.NoOpStreamHandler)
	return spdy, resp.Header.Get("X-Stream-Protocol-Version")
}

func open(conn *spdystream.Connection, headers http.Header) *spdystream.Stream {
	s, err := conn.CreateStream(headers, nil, false)
	if err != nil {
		fail("create stream %v: %v", headers, err)
	}
	if err := s.Wait(); err != nil {
		fail("stream %v not replied: %v", headers, err)
	}
	return s
}

type sizes []string

func (s *sizes) String() string     { return strings.Join(*s, ",") }
func (s *sizes) Set(v string) error { *s = append(*s, v); return nil }

func exec(args []string) {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	stdin := fs.Bool("stdin", false, "")
	stdout := fs.Bool("stdout", false, "")
	stderr := fs.Bool("stderr", false, "")
	tty := fs.Bool("tty", false, "")
	protocols := fs.String("protocols", "v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io", "")
	var resizes sizes
	fs.Var(&resizes, "resize", "WxH, sent in order before stdin")
	fs.Parse(args[1:])
	conn, protocol := upgrade(args[0], strings.Split(*protocols, ","))
	fmt.Fprintf(os.Stderr, "protocol: %s\n", protocol)

	// The order client-go opens them in.
	h := func(kind string) http.Header { return http.Header{"Streamtype": {kind}} }
	errorStream := open(conn, h("error"))
	var in, out, errOut, resize *spdystream.Stream
	if *stdin {
		in = open(conn, h("stdin"))
	}
	if *stdout {
		out = open(conn, h("stdout"))
	}
	if *stderr {
		errOut = open(conn, h("stderr"))
	}
	if *tty && protocol != "v2.channel.k8s.io" && protocol != "channel.k8s.io" {
		resize = open(conn, h("resize"))
	}
	if resize != nil {
		enc := json.NewEncoder(resize)
		for _, s := range resizes {
			var w, hgt uint16
			fmt.Sscanf(s, "%dx%d", &w, &hgt)
			enc.Encode(map[string]uint16{"Width": w, "Height": hgt})
		}
	}
	var wg sync.WaitGroup
	copyOut := func(dst io.Writer, s *spdystream.Stream) {
		if s == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(dst, s)
		}()
	}
	copyOut(os.Stdout, out)
	copyOut(os.Stderr, errOut)
	if in != nil {
		go func() {
			// Resizes first: a test that reads `stty size` sends them
			// before the line that triggers it.
			time.Sleep(100 * time.Millisecond)
			io.Copy(in, os.Stdin)
			in.Close()
		}()
	}
	status, _ := io.ReadAll(errorStream)
	wg.Wait()
	conn.Close()
	os.Exit(exitCode(protocol, status))
}

func exitCode(protocol string, status []byte) int {
	if !strings.HasPrefix(protocol, "v4.") && !strings.HasPrefix(protocol, "v5.") {
		if len(status) > 0 {
			fmt.Fprintf(os.Stderr, "error: %s\n", status)
			return 125
		}
		return 0
	}
	var s struct {
		Status  string
		Reason  string
		Message string
		Details struct {
			Causes []struct {
				Reason  string
				Message string
			}
		}
	}
	if err := json.Unmarshal(status, &s); err != nil {
		fmt.Fprintf(os.Stderr, "bad status %q: %v\n", status, err)
		return 125
	}
	if s.Status == "Success" {
		return 0
	}
	if s.Reason == "NonZeroExitCode" {
		for _, c := range s.Details.Causes {
			if c.Reason == "ExitCode" {
				code, err := strconv.ParseUint(c.Message, 10, 8)
				if err == nil {
					return int(code)
				}
			}
		}
	}
	fmt.Fprintf(os.Stderr, "error: %s\n", s.Message)
	return 125
}

func portforward(args []string) {
	if len(args) != 2 {
		fail("usage: portforward URL PORT")
	}
	conn, _ := upgrade(args[0], []string{"portforward.k8s.io"})
	headers := http.Header{"Streamtype": {"error"}, "Port": {args[1]}, "Requestid": {"0"}}
	errorStream := open(conn, headers)
	// Nothing is ever sent on the error stream: close our side at once,
	// as client-go does.
	errorStream.Close()
	errs := make(chan []byte, 1)
	go func() {
		msg, _ := io.ReadAll(errorStream)
		errs <- msg
	}()
	headers.Set("Streamtype", "data")
	data := open(conn, headers)
	done := make(chan struct{})
	go func() {
		io.Copy(os.Stdout, data)
		close(done)
	}()
	go func() {
		io.Copy(data, os.Stdin)
		data.Close()
	}()
	<-done
	msg := <-errs
	conn.Close()
	if len(msg) > 0 {
		fmt.Fprintf(os.Stderr, "%s\n", msg)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: spdyclient exec|portforward URL ...")
	}
	switch os.Args[1] {
	case "exec":
		exec(os.Args[2:])
	case "portforward":
		portforward(os.Args[2:])
	default:
		fail("unknown mode %q", os.Args[1])
	}
}

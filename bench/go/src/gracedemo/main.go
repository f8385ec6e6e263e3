// The first article's subject, facebookgo/grace (gracehttp on gracenet and httpdown), as its
// README shows it: SIGUSR2 starts a new process that inherits the listener (LISTEN_FDS); once
// it listens it sends SIGTERM to its parent, which stops accepting and finishes its requests.
package main

import (
	"flag"
	"log"
	"net/http"

	"benchsleep"

	"github.com/facebookgo/grace/gracehttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	if err := gracehttp.Serve(&http.Server{Addr: *addr, Handler: benchsleep.Handler}); err != nil {
		log.Fatal(err)
	}
}

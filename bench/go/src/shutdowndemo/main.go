// The second article's demo, written from its description: net/http's Server.Shutdown (Go 1.8)
// with the listener passed to a new process at fd 3. On SIGHUP the process starts itself again
// with -g (listen on fd 3), then shuts its own server down, waiting at most 20 s for requests in
// flight. Two changes from the article, so that it can be benchmarked: the address is a flag
// (the article hard-codes :1111 and drops the arguments), and the old process exits after its
// shutdown (the article's stays blocked forever) and SIGTERM stops it (the article forks on
// SIGTERM too).
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"benchsleep"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	graceful := flag.Bool("g", false, "listen on fd 3 (internal use only)")
	flag.Parse()

	var listener net.Listener
	var err error
	if *graceful {
		listener, err = net.FileListener(os.NewFile(3, "listener"))
	} else {
		listener, err = net.Listen("tcp", *addr)
	}
	if err != nil {
		log.Fatal(err)
	}

	server := &http.Server{Handler: benchsleep.Handler}
	go server.Serve(listener)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM)
	sig := <-signals
	if sig == syscall.SIGHUP {
		file, err := listener.(*net.TCPListener).File()
		if err != nil {
			log.Fatal(err)
		}
		args := []string{"-addr", *addr, "-g"}
		cmd := exec.Command(os.Args[0], args...)
		cmd.ExtraFiles, cmd.Stdout, cmd.Stderr = []*os.File{file}, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		log.Printf("pid %d started pid %d", os.Getpid(), cmd.Process.Pid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	server.Shutdown(ctx)
}

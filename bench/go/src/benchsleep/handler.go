// Package benchsleep is the benchmark's endpoint for the Go servers, the same as the test server's (testassets/TestServer):
// GET /?sleep=N waits N seconds (fractions allowed), then answers "pid:<pid>" on the first line,
// with a Content-Length so keep-alive clients keep their connections.
package benchsleep

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Handler serves /?sleep=N.
var Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	seconds, _ := strconv.ParseFloat(r.URL.Query().Get("sleep"), 64)
	if seconds > 0 {
		select {
		case <-time.After(time.Duration(seconds * float64(time.Second))):
		case <-r.Context().Done():
			return
		}
	}

	body := []byte(fmt.Sprintf("pid:%d\nsleep:%g\n", os.Getpid(), seconds))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
})

// The pod sandbox ("pause") image's only process: it holds the pod's namespaces and exits on
// SIGTERM or SIGINT. Built by hack/images.py because the upstream pause image cannot be pulled
// here (no registry access).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

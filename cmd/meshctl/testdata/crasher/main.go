// Crasher serves like a service, then exits with code 2 after 1.5 s: the
// runtime's crash-loop test runs it.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/micromesh/micromesh/service"
)

func main() {
	srv := service.New(service.Name("crasher"))
	go func() {
		time.Sleep(1500 * time.Millisecond)
		fmt.Println("crashing on purpose")
		os.Exit(2)
	}()
	if err := srv.Run(); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}

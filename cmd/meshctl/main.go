// Command meshctl is the Micromesh CLI: it runs the server and talks to it.
package main

import (
	"os"

	"github.com/micromesh/micromesh/cli"
)

func main() { os.Exit(cli.Execute()) }

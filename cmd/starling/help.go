package main

import "io"

const usage = `usage: starling [flags]                  serve until SIGINT or SIGTERM
       starling -check [-ports] [flags]  check the configuration and the files it names, and exit
       starling COMMAND [arguments]

Commands:
  passwd    add, change or delete a user of a password file
  store     inspect the data folder of a stopped broker
  cert dev  make a development CA and a server certificate for mqtts and wss
  version   print the version
  help      print this help, or a command's: starling help COMMAND

Documentation: README.md and docs/ in https://github.com/starling-mqtt/starling

Flags:
`

func init() {
	// In init: the map cannot name help in its own initializer.
	subcommands["help"] = func(args []string, stdout, _ io.Writer) int {
		if len(args) > 0 {
			if cmd, ok := subcommands[args[0]]; ok && args[0] != "help" {
				return cmd([]string{"-help"}, stdout, stdout)
			}
		}
		return serve([]string{"-help"}, stdout, stdout)
	}
}

module github.com/postfix-archive/mailarchive

go 1.26.8

require (
	github.com/emersion/go-message v0.18.2
	github.com/emersion/go-milter v0.5.0
	github.com/spf13/pflag v1.1.0
)

require golang.org/x/text v0.14.0 // indirect

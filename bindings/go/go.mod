module sockserv

go 1.19

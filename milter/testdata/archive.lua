-- miltertest script for milter_archiver: run by TestMiltertest as
--   miltertest -s archive.lua -D port=PORT
-- Two messages on one connection, an aborted one between them, and the
-- X-Archive-ID header added at end of message. The Go test checks the
-- archive afterwards.

function check(err, what)
	if err ~= nil then
		error(what .. ": " .. err)
	end
end

function continue(conn, what)
	if mt.getreply(conn) ~= SMFIR_CONTINUE then
		error(what .. ": reply is not continue")
	end
end

conn = mt.connect("inet:" .. port .. "@127.0.0.1", 20, 0.1)
if conn == nil then
	error("mt.connect() failed")
end
-- Offer what Postfix 3.7 offers: every protocol bit, HDR_LEADSPC included.
-- (This miltertest puts its third argument into the OPTNEG protocol field,
-- whatever its manual page says about the order.)
check(mt.negotiate(conn, 6, 0x1fffff, 0x1ff), "negotiate")

check(mt.macro(conn, SMFIC_CONNECT, "j", "mx.example", "{daemon_name}", "smtpd"), "macro connect")
check(mt.conninfo(conn, "client.example", "192.0.2.55"), "conninfo")
continue(conn, "conninfo")
check(mt.helo(conn, "helo.example"), "helo")
continue(conn, "helo")

-- Message 1.
check(mt.macro(conn, SMFIC_MAIL, "i", "MTQ1", "{auth_authen}", "alice"), "macro mail")
check(mt.mailfrom(conn, "<alice@example.org>", "SIZE=42", "BODY=8BITMIME"), "mailfrom")
continue(conn, "mailfrom")
check(mt.rcptto(conn, "<bob@example.net>"), "rcptto")
continue(conn, "rcptto")
check(mt.rcptto(conn, "<carol@example.net>", "NOTIFY=NEVER"), "rcptto 2")
continue(conn, "rcptto 2")
-- With HDR_LEADSPC requested by the milter, miltertest models each field as
-- "Name: value" and sends the space after the colon as part of the value:
-- these arrive as " x", " \tx", "   x", " first\n\tsecond" and " ".
check(mt.header(conn, "Subject", "x"), "header")
check(mt.header(conn, "Subject", "\tx"), "header")
check(mt.header(conn, "Subject", "  x"), "header")
check(mt.header(conn, "X-Folded", "first\n\tsecond"), "header")
check(mt.header(conn, "X-Empty", ""), "header")
check(mt.eoh(conn), "eoh")
continue(conn, "eoh")
check(mt.bodystring(conn, "line one\r\nline two\r\n"), "body")
continue(conn, "body")
check(mt.eom(conn), "eom")
continue(conn, "eom")
if not mt.eom_check(conn, MT_HDRADD, "X-Archive-ID") then
	error("no X-Archive-ID header added")
end
mt.echo("X-Archive-ID:" .. mt.getheader(conn, "X-Archive-ID", 0))

-- An aborted message: nothing archived.
check(mt.mailfrom(conn, "<mallory@example.org>"), "mailfrom aborted")
check(mt.rcptto(conn, "<bob@example.net>"), "rcptto aborted")
check(mt.header(conn, "Subject", "aborted"), "header aborted")
check(mt.bodystring(conn, "never archived\r\n"), "body aborted")
check(mt.abort(conn), "abort")

-- Message 2 on the same connection.
check(mt.macro(conn, SMFIC_MAIL, "i", "MTQ2"), "macro mail 2")
check(mt.mailfrom(conn, "<>"), "mailfrom 2")
continue(conn, "mailfrom 2")
check(mt.rcptto(conn, "<dave@example.net>"), "rcptto 3")
continue(conn, "rcptto 3")
check(mt.header(conn, "Subject", "second"), "header 2")
check(mt.eoh(conn), "eoh 2")
check(mt.bodystring(conn, "second body\r\n"), "body 2")
check(mt.eom(conn), "eom 2")
continue(conn, "eom 2")

check(mt.disconnect(conn), "disconnect")

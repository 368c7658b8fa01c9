# SPDX-License-Identifier: GPL-2.0-or-later
# bench/calls.awk: turn `strace -f -ttt -T -yy -s N` output of the plugin (and the
# image servers it forks) into
#   C <start> <end> <method> <id> <status>      one line per HTTP call
#   E <start> <dur> <pid> <kind> <detail>       one line per event of interest
# Times are epoch seconds. A call runs from accept4() returning its socket to the
# first shutdown() or close() of that socket (after the answer is sent); sockets are told apart by inode (-yy prints it), so the
# thread that serves a call does not matter. mawk-compatible.

function inode_of(s,   i) {
	i = index(s, "UNIX-STREAM:[")
	if (!i) return ""
	s = substr(s, i + 13)
	match(s, /^[0-9]+/)
	return RSTART ? substr(s, 1, RLENGTH) : ""
}

function first_quoted(s,   i) {
	i = index(s, "\"")
	if (!i) return ""
	s = substr(s, i + 1)
	match(s, /^([^"\\]|\\.)*/)
	return substr(s, 1, RLENGTH)
}

function base(p,   n) {
	n = split(p, parts, "/")
	return parts[n]
}

function event(ts, dur, pid, kind, detail) {
	printf "E %.6f %.6f %s %s %s\n", ts, dur, pid, kind, detail == "" ? "-" : detail
}

# one complete syscall: NAME, its text (args and result), start time, duration
function syscall(pid, ts, name, text, dur,   ino, q, m, args, n, fs) {
	if (name == "accept4" || name == "accept") {
		if (text ~ /= -1/) return
		sub(/.*\) = /, "", text)
		ino = inode_of(text)
		if (ino != "") { cstart[ino] = ts + dur; cmeth[ino] = "?"; cid[ino] = "-"; cstat[ino] = "-" }
		return
	}
	if (name == "recvfrom" || name == "read" || name == "recvmsg") {
		ino = inode_of(text)
		if (ino == "" || !(ino in cstart)) return
		if (cmeth[ino] == "?" && match(text, /"POST \/[A-Za-z.]+/)) cmeth[ino] = substr(text, RSTART + 7, RLENGTH - 7)
		if (cid[ino] == "-" && match(text, /\\"ID\\":\\"[^\\"]*/)) cid[ino] = substr(text, RSTART + 9, RLENGTH - 9)
		return
	}
	if (name == "sendto" || name == "sendmsg" || name == "writev" || name == "write") {
		ino = inode_of(text)
		if (ino == "" || !(ino in cstart)) return
		if (cstat[ino] == "-" && match(text, /"HTTP\/1\.[01] [0-9]+/)) cstat[ino] = substr(text, RSTART + RLENGTH - 3, 3)
		return
	}
	if (name == "close" || name == "shutdown") {
		ino = inode_of(text)
		if (ino != "" && (ino in cstart)) {
			printf "C %.6f %.6f %s %s %s\n", cstart[ino], ts + dur, cmeth[ino], cid[ino], cstat[ino]
			delete cstart[ino]
		}
		return
	}
	if (name == "mount") {
		n = split(text, args, ", ")
		fs = args[3]
		gsub(/"/, "", fs)
		event(ts, dur, pid, "mount:" fs, base(first_quoted(args[2])))
		return
	}
	if (name == "umount2") { event(ts, dur, pid, "umount2", base(first_quoted(text))); return }
	if (name == "execve") {
		if (text ~ /= -1/) return
		q = text
		sub(/^[^[]*\[/, "", q)
		sub(/\].*$/, "", q)
		gsub(/"/, "", q)
		n = split(q, args, ", ")
		m = base(args[1])
		if (m == "ploop-graphdriver" && n > 1) m = m "-" args[2]
		event(ts, dur, pid, "exec:" m, "")
		return
	}
	if (name == "ioctl") {
		if (match(text, /LOOP_[A-Z_0-9]+/)) event(ts, dur, pid, "ioctl:" substr(text, RSTART, RLENGTH), "")
		else if (match(text, /FS_IOC_[A-Z_0-9]+|FIFREEZE|FITHAW|BLK[A-Z0-9]+/)) event(ts, dur, pid, "ioctl:" substr(text, RSTART, RLENGTH), "")
		return
	}
	if (name == "fsync" || name == "fdatasync" || name == "syncfs" || name == "sync" || name == "sync_file_range") {
		q = text
		sub(/^[0-9]+</, "", q)
		sub(/>.*$/, "", q)
		event(ts, dur, pid, name, base(q))
		return
	}
	if (name == "clone" || name == "clone3" || name == "fork" || name == "vfork") {
		if (text !~ /CLONE_THREAD/) event(ts, dur, pid, "fork", "")
		return
	}
	if (name == "wait4" || name == "waitid") { event(ts, dur, pid, "wait", ""); return }
	if (name == "fallocate" || name == "ftruncate" || name == "renameat2" || name == "rename" || name == "unlinkat" || name == "linkat" || name == "mkdirat" || name == "rmdir") {
		event(ts, dur, pid, name, "")
		return
	}
}

{
	pid = $1; ts = $2
	rest = $0
	sub(/^[0-9]+ +[0-9.]+ +/, "", rest)
	if (rest ~ /^(\+\+\+|---)/) {
		if (rest ~ /exited|killed/) event(ts, 0, pid, "exit", "")
		next
	}
	dur = 0
	if (match(rest, /<[0-9.]+>$/)) dur = substr(rest, RSTART + 1, RLENGTH - 2) + 0
	if (rest ~ /<unfinished \.\.\.>$/) {
		name = rest; sub(/\(.*/, "", name)
		pend[pid] = rest; sub(/ *<unfinished \.\.\.>$/, "", pend[pid])
		pendts[pid] = ts; pendname[pid] = name
		next
	}
	if (rest ~ /^<\.\.\. [a-z0-9_]+ resumed>/) {
		if (!(pid in pend)) next
		name = pendname[pid]
		sub(/^<\.\.\. [a-z0-9_]+ resumed>/, "", rest)
		text = pend[pid] rest
		delete pend[pid]
		sub(/^[a-z0-9_]+\(/, "", text)
		syscall(pid, pendts[pid], name, text, dur)
		next
	}
	name = rest; sub(/\(.*/, "", name)
	text = rest; sub(/^[a-z0-9_]+\(/, "", text)
	syscall(pid, ts, name, text, dur)
}

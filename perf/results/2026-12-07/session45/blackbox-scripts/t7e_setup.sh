#!/bin/bash
W=/tmp/h45/w7e; rm -rf $W; source /tmp/h45/scripts/lib.sh
start_tracker 33089 >/dev/null || exit 1
setup_users g1 alice bob > /dev/null
start_shell al 33086; sh_do al login alice palice >/dev/null
for i in 2 3 4 5 6 7 8; do sh_do al create_group g$i >/dev/null; done
for i in 2 3 4 5 6 7 8; do sh_do al accept_request g$i bob >/dev/null; done
sh_quit al >/dev/null
start_shell bo 33084; sh_do bo login bob pbob >/dev/null
for i in 2 3 4 5 6 7 8; do sh_do bo join_group g$i >/dev/null; done
sh_quit bo >/dev/null
start_shell al 33086; sh_do al login alice palice >/dev/null
for i in 2 3 4 5 6 7 8; do sh_do al accept_request g$i bob >/dev/null; done
sh_quit al >/dev/null
mkdir -p $W/tree
python3 -c "
import os,random
for i in range(3000):
    d=f'$W/tree/d{i%20}'; os.makedirs(d,exist_ok=True)
    open(f'{d}/f{i}.bin','wb').write(os.urandom(random.randint(1,20000)))"
python3 /tmp/h45/scripts/t7e_share_int_registering.py
kill $TPID; wait

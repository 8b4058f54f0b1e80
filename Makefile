# jobq: a job queue inside PostgreSQL (PGXS)
#
#   make && make install                 build and install (as root)
#   make installcheck                    all tests, each on a throwaway
#                                        instance (run as a non-root user)
#   scripts/test.sh                      what CI runs: set-up, build, tests

MODULE_big = jobq
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "jobq - job queue inside PostgreSQL"

EXTENSION = jobq
DATA = jobq--1.0.sql

PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wmissing-prototypes -Wpointer-arith \
	-Werror=vla -Wendif-labels -Wformat-security -Wno-declaration-after-statement

# pg_regress: the SQL API, run with CALL jobq.work() on a private instance
REGRESS = dispatch register work failures security operations failed_jobs lifecycle chains middleware consumer retry_options dispatch_many statement_timer lease_expiry
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=$(srcdir)/test/jobq.conf

# isolation: concurrent reservation
ISOLATION = skip_locked retry_race funnel consumer_fencing external_wakeup
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=$(srcdir)/test/jobq.conf

# TAP: background workers, crashes, timeouts
TAP_TESTS = 1

EXTRA_CLEAN = tmp_check tmp_check_regress tmp_check_iso results output_iso log \
	regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every source file includes the shared header
$(OBJS): src/jobq.h

# the jobq command-line tool (src/cli, its own Makefile: a libpq client)
all: cli
cli:
	$(MAKE) -C $(srcdir)/src/cli PG_CONFIG=$(PG_CONFIG)
install: install-cli
install-cli: cli
	$(MAKE) -C $(srcdir)/src/cli install PG_CONFIG=$(PG_CONFIG)
uninstall: uninstall-cli
uninstall-cli:
	$(MAKE) -C $(srcdir)/src/cli uninstall PG_CONFIG=$(PG_CONFIG)
clean: clean-cli
clean-cli:
	$(MAKE) -C $(srcdir)/src/cli clean
.PHONY: cli install-cli uninstall-cli clean-cli

/*-------------------------------------------------------------------------
 *
 * main.c
 *		jobq: the command-line tool of the jobq extension.
 *
 *	jobq [-d CONNINFO] COMMAND [OPTIONS]
 *
 * The connection comes from -d/--dbname (a conninfo string or URI, as
 * psql's) and the usual PG* environment variables.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/main.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *cli_conninfo = NULL;
const char *progname = "jobq";

typedef struct Command
{
	const char *name;
	int			(*run) (int argc, char **argv);
	const char *summary;
} Command;

static const Command commands[] = {
	{"work", cmd_work, "run external jobs with a shell command (an external worker)"},
	{"dispatch", cmd_dispatch, "queue a job"},
	{"failed", cmd_failed, "list failed jobs"},
	{"retry", cmd_retry, "queue failed jobs again"},
	{"forget", cmd_forget, "delete a failed job"},
	{"flush", cmd_flush, "delete failed jobs"},
	{"restart", cmd_restart, "ask every worker to restart after its current jobs"},
	{"listen", cmd_listen, "print jobq's events as JSON lines"},
	{"monitor", cmd_monitor, "live view of queues and workers"},
	{NULL, NULL, NULL}
};

static void
usage(FILE *out)
{
	fprintf(out,
			"jobq: the command-line tool of the jobq job queue.\n\n"
			"Usage:\n  jobq [-d CONNINFO] COMMAND [OPTIONS]\n  jobq COMMAND --help\n\n"
			"Commands:\n");
	for (const Command *c = commands; c->name; c++)
		fprintf(out, "  %-10s %s\n", c->name, c->summary);
	fprintf(out,
			"\nConnection: -d/--dbname CONNINFO (a connection string or URI; it may\n"
			"also be given after the command), and the PG* environment variables\n"
			"(PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, ...).\n\n"
			"Exit codes:\n"
			"  0  done\n"
			"  1  the server reported an error (shown with its detail and hint)\n"
			"  2  bad command line\n"
			"  3  could not connect, or the connection was lost\n"
			"  4  nothing matched (no such failed job)\n");
}

int
main(int argc, char **argv)
{
	int			i = 1;

	/* global options before the command */
	while (i < argc && argv[i][0] == '-')
	{
		if ((strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--dbname") == 0) &&
			i + 1 < argc)
		{
			cli_conninfo = argv[i + 1];
			i += 2;
		}
		else if (strncmp(argv[i], "--dbname=", 9) == 0)
			cli_conninfo = argv[i++] + 9;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
		{
			usage(stdout);
			return EXIT_OK;
		}
		else if (strcmp(argv[i], "--version") == 0)
		{
			printf("jobq 1.0\n");
			return EXIT_OK;
		}
		else
		{
			fprintf(stderr, "jobq: unknown option \"%s\"\n", argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (i >= argc)
	{
		usage(stderr);
		return EXIT_USAGE;
	}
	for (const Command *c = commands; c->name; c++)
	{
		if (strcmp(argv[i], c->name) == 0)
			return c->run(argc - i, argv + i);
	}
	if (strcmp(argv[i], "help") == 0)
	{
		usage(stdout);
		return EXIT_OK;
	}
	fprintf(stderr, "jobq: unknown command \"%s\"\n", argv[i]);
	usage(stderr);
	return EXIT_USAGE;
}

#include "postgres.h"
#include "jobq.h"
void jobq_middleware_check(Jsonb *middleware) {}
void jobq_middleware_run(JobqJob *job, JobqMiddlewareDecision *d) { d->action = JOBQ_MW_RUN; }
void jobq_limiter_init_hooks(void) {}
#include "fmgr.h"
PG_FUNCTION_INFO_V1(jobq_throttle);
PG_FUNCTION_INFO_V1(jobq_funnel);
Datum jobq_throttle(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(true); }
Datum jobq_funnel(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(true); }

#include "proj_fixture.h"
#include <criterion/criterion.h>
Test(proj_def, placeholder, .init = pfx_setup, .fini = pfx_teardown) {}

# mmm — one non-recursive Makefile.  Output goes to $(BUILD) (default build/).
#
#   make            build everything (installs missing Debian packages first)
#   make test       build and run every test; last line "N passed, N failed"
#   make asan       the same tests, built with ASan+UBSan into build/asan
#   make bench      build and run the benchmarks (they print figures, never fail on time)
#   make demo       two local test servers replicating both ways
#   make deps       install the Debian packages the project needs
#
# Sources are found by wildcard, so adding a file needs no edit here:
#   journal/*.c               -> libmmm.a (the core library every program links)
#   capture/*.c, apply/*.c    -> libcapture.a / libapply.a, main.c -> mmm-capture / mmm-apply
#   tools/mmm-journal/*.c     -> mmm-journal;  tools/mmm/*.c -> mmm
#   tests/mongosim/*.c        -> mongosim (libbson only)
#   tests/unit/test_*.c       -> one unit-test binary each; tests/unit/support_*.c linked into all
#   tests/bench/*.c           -> one benchmark program each

BUILD   ?= build
CC      ?= cc
PKGS    := libmongoc-1.0 libbson-1.0 yaml-0.1 lmdb libzstd
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT     ?= -O2 -g
CFLAGS  ?=
CFLAGS  += -std=gnu11 $(OPT) $(WARN) -pthread -D_GNU_SOURCE -Ijournal -Icapture -Iapply
LDLIBS  += -pthread -lm
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
BSON_CFLAGS = $(shell pkg-config --cflags libbson-1.0 2>/dev/null)
BSON_LIBS   = $(shell pkg-config --libs libbson-1.0 2>/dev/null)

OBJ := $(BUILD)/obj
BIN := $(BUILD)/bin
LIB := $(BUILD)/lib

lib_src      = $(filter-out $(1)/main.c,$(wildcard $(1)/*.c))
JOURNAL_SRC := $(wildcard journal/*.c)
CAPTURE_SRC := $(call lib_src,capture)
APPLY_SRC   := $(call lib_src,apply)
MMMJ_SRC    := $(wildcard tools/mmm-journal/*.c)
MMM_SRC     := $(wildcard tools/mmm/*.c)
SIM_SRC     := $(wildcard tests/mongosim/*.c)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
SUPPORT_SRC := $(wildcard tests/unit/support_*.c)
BENCH_SRC   := $(wildcard tests/bench/*.c)

objs = $(patsubst %.c,$(OBJ)/%.o,$(1))

LIBMMM     := $(LIB)/libmmm.a
LIBCAPTURE := $(LIB)/libcapture.a
LIBAPPLY   := $(LIB)/libapply.a
ALL_LIBS   := $(LIBAPPLY) $(LIBCAPTURE) $(LIBMMM)

PROGS := $(if $(SIM_SRC),$(BIN)/mongosim) \
         $(if $(MMMJ_SRC),$(BIN)/mmm-journal) \
         $(if $(MMM_SRC),$(BIN)/mmm) \
         $(if $(wildcard capture/main.c),$(BIN)/mmm-capture) \
         $(if $(wildcard apply/main.c),$(BIN)/mmm-apply)
UNITS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCHES := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all deps test asan bench demo clean
all: $(PROGS) $(UNITS)

deps:
	@sh tools/deps.sh

$(OBJ)/tests/mongosim/%.o: tests/mongosim/%.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BSON_CFLAGS) -MMD -MP -c $< -o $@

$(OBJ)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

# An empty archive is fine: programs link all three whatever exists.
$(LIBMMM): $(call objs,$(JOURNAL_SRC))
$(LIBCAPTURE): $(call objs,$(CAPTURE_SRC))
$(LIBAPPLY): $(call objs,$(APPLY_SRC))
$(LIB)/%.a:
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^ 2>/dev/null || ar rcs $@

$(BIN)/mongosim: $(call objs,$(SIM_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(BSON_LIBS) $(LDLIBS)

$(BIN)/mmm-journal: $(call objs,$(MMMJ_SRC)) $(ALL_LIBS)
$(BIN)/mmm: $(call objs,$(MMM_SRC)) $(ALL_LIBS)
$(BIN)/mmm-capture: $(call objs,capture/main.c) $(ALL_LIBS)
$(BIN)/mmm-apply: $(call objs,apply/main.c) $(ALL_LIBS)
$(BIN)/mmm-journal $(BIN)/mmm $(BIN)/mmm-capture $(BIN)/mmm-apply:
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(ALL_LIBS) $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $(call objs,$(SUPPORT_SRC)) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(ALL_LIBS) $(PKG_LIBS) $(LDLIBS)

$(BUILD)/bench/%: $(OBJ)/tests/bench/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(ALL_LIBS) $(PKG_LIBS) $(LDLIBS)

test: all
	@MMM_BUILD=$(BUILD) sh tests/run.sh

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT="-O1 -g" test

bench: all $(BENCHES)
	@MMM_BUILD=$(BUILD) sh tests/bench/run.sh

demo: all
	@MMM_BUILD=$(BUILD) sh tools/demo.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

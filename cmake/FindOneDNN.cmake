# Finds oneDNN 3.x. Order: ONEDNN_ROOT, then the oneDNN wheels of the Python environment in
# use: onednn-cpu-gomp/onednn-devel-cpu-gomp (3.2, CPU engine, GNU OpenMP: what we pin), then
# onednn/onednn-devel (3.13, but a SYCL build whose CPU engine needs a SYCL CPU device).
# Debian 12 has only 2.6, whose API differs.
# Defines OneDNN::dnnl, ONEDNN_LIBRARY_DIR and ONEDNN_VERSION.
set(_onednn_hints)
if(ONEDNN_ROOT)
  list(APPEND _onednn_hints ${ONEDNN_ROOT})
endif()
# The interpreter whose wheels to look in: Python_EXECUTABLE, an active venv, the project's
# .venv (what ./scripts/setup-env.sh makes), then PATH.
set(_onednn_python_hints ${PROJECT_SOURCE_DIR}/.venv/bin)
if(DEFINED ENV{VIRTUAL_ENV})
  list(PREPEND _onednn_python_hints $ENV{VIRTUAL_ENV}/bin)
endif()
find_program(_onednn_python NAMES python3 python HINTS ${_onednn_python_hints} NO_CACHE NO_CMAKE_SYSTEM_PATH)
if(Python_EXECUTABLE)
  set(_onednn_python ${Python_EXECUTABLE})
endif()
if(_onednn_python)
  # Wheels put headers and libraries under the environment's data dir; locate them through
  # the installed distributions so a pip build-isolation overlay is found too.
  execute_process(COMMAND ${_onednn_python} -c
"import importlib.metadata as m, pathlib
for dist, name in (('onednn-devel-cpu-gomp', 'dnnl.hpp'), ('onednn-cpu-gomp', 'libdnnl.so.3'),
                   ('onednn-devel', 'dnnl.hpp'), ('onednn', 'libdnnl.so.3')):
    try:
        d = m.distribution(dist)
    except m.PackageNotFoundError:
        continue
    for f in d.files or []:
        if f.name == name:
            print(pathlib.Path(d.locate_file(f)).resolve().parent.parent)
            break"
    OUTPUT_VARIABLE _onednn_py_prefixes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  string(REPLACE "\n" ";" _onednn_py_prefixes "${_onednn_py_prefixes}")
  list(APPEND _onednn_hints ${_onednn_py_prefixes})
endif()

find_path(ONEDNN_INCLUDE_DIR oneapi/dnnl/dnnl.hpp HINTS ${_onednn_hints} PATH_SUFFIXES include NO_DEFAULT_PATH)
find_library(ONEDNN_LIBRARY NAMES dnnl libdnnl.so.3 HINTS ${_onednn_hints} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
if(ONEDNN_INCLUDE_DIR AND EXISTS ${ONEDNN_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h)
  file(STRINGS ${ONEDNN_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h _v REGEX "#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" ONEDNN_VERSION "${_v}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OneDNN REQUIRED_VARS ONEDNN_LIBRARY ONEDNN_INCLUDE_DIR VERSION_VAR ONEDNN_VERSION)
if(OneDNN_FOUND AND NOT TARGET OneDNN::dnnl)
  if(ONEDNN_VERSION VERSION_LESS 3.0)
    message(FATAL_ERROR "oneDNN ${ONEDNN_VERSION} found; PyFlameRT needs 3.x (pip install onednn-devel)")
  endif()
  get_filename_component(ONEDNN_LIBRARY_DIR ${ONEDNN_LIBRARY} DIRECTORY)
  add_library(OneDNN::dnnl SHARED IMPORTED)
  set_target_properties(OneDNN::dnnl PROPERTIES IMPORTED_LOCATION ${ONEDNN_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${ONEDNN_INCLUDE_DIR})
  message(STATUS "oneDNN ${ONEDNN_VERSION}: ${ONEDNN_LIBRARY}")
endif()

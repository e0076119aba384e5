// llmc-kit compat shim for llm.c @ f1e2ace built with CUDA >= 13. Force-included by native/build.sh
// (nvcc -include <this file>); no llm.c file is edited.
//
// CUDA 13 removed the CUDA 12 signature
//     cudaMemAdvise(const void*, size_t, cudaMemoryAdvise, int device)
// in favour of one taking a cudaMemLocation. llm.c calls the old form once
// (llmc/cuda_utils.cuh: cudaMemAdvise(*out, bytes, cudaMemAdviseSetPreferredLocation, cudaCpuDeviceId)).
// This adds a C++ overload with the old signature that forwards to the new one.
#pragma once
#if defined(__cplusplus) && defined(__CUDACC__)
#include <cuda_runtime_api.h>
#if defined(CUDART_VERSION) && CUDART_VERSION >= 13000
static inline cudaError_t cudaMemAdvise(const void* devPtr, size_t count, cudaMemoryAdvise advice, int device) {
    cudaMemLocation loc;
    if (device == cudaCpuDeviceId) {
        loc.type = cudaMemLocationTypeHost;
        loc.id = 0;
    } else {
        loc.type = cudaMemLocationTypeDevice;
        loc.id = device;
    }
    return cudaMemAdvise(devPtr, count, advice, loc);
}
#endif
#endif

// llm.c @ f1e2ace built with USE_MPI calls MPI_Finalize() at exit even when its ranks were started with
// `-pi fs` or `-pi tcp` (Slurm's srun, no mpirun), where MPI_Init never ran: Open MPI then aborts with
// "MPI_Finalize() function was called before MPI_INIT" and exit status 1 after a good run. Finalize only
// what was initialized. (Not CUDA-13 specific, but it is the same kind of shim: forced in, no llm.c edit.)
#if defined(__cplusplus) && defined(USE_MPI)
#include <mpi.h>
static inline int llmc_kit_mpi_finalize_if_initialized(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return (initialized && !finalized) ? MPI_Finalize() : MPI_SUCCESS;
}
#define MPI_Finalize llmc_kit_mpi_finalize_if_initialized
#endif

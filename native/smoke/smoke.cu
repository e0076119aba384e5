// llmc-kit smoke test: MPI + CUDA + NCCL, the three things train_gpt2cu needs, in ~100 lines.
//   mpirun -np N llmc_smoke
// Every rank reports (MPI part). With no CUDA device (CI, a CPU box) the GPU part is skipped and says so;
// with GPUs each rank takes GPU (rank % count), all-reduces a buffer of (rank+1) with NCCL and checks
// the sum is N(N+1)/2 everywhere. Exit code 0 = all checks that could run passed.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#define MPICHECK(x) do { int e_ = (x); if (e_ != MPI_SUCCESS) { fprintf(stderr, "MPI error %d at %s:%d\n", e_, __FILE__, __LINE__); MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)
#define CUDACHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "[rank %d] CUDA error %s at %s:%d\n", rank, cudaGetErrorString(e_), __FILE__, __LINE__); MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)
#define NCCLCHECK(x) do { ncclResult_t e_ = (x); if (e_ != ncclSuccess) { fprintf(stderr, "[rank %d] NCCL error %s at %s:%d\n", rank, ncclGetErrorString(e_), __FILE__, __LINE__); MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)

__global__ void fill(float* x, int n, float v) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}

int main(int argc, char** argv) {
    int rank = 0, world = 1, namelen = 0;
    char host[MPI_MAX_PROCESSOR_NAME];
    MPICHECK(MPI_Init(&argc, &argv));
    MPICHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPICHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
    MPICHECK(MPI_Get_processor_name(host, &namelen));
    int nccl_ver = 0;
    ncclGetVersion(&nccl_ver);
    printf("[smoke] MPI rank %d of %d on %s: OK (NCCL library %d, built for CUDA %d)\n", rank, world, host, nccl_ver, CUDART_VERSION);
    fflush(stdout);

    int ndev = 0;
    cudaError_t err = cudaGetDeviceCount(&ndev);
    // NCCL wants one GPU per rank on a host: with fewer GPUs than ranks the GPU part is skipped too.
    const char* lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");   // one GPU per rank on each host
    int local_rank = lr ? atoi(lr) : rank;
    int have = (err == cudaSuccess && local_rank < ndev) ? 1 : 0, all_have = 0;
    MPICHECK(MPI_Allreduce(&have, &all_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (!all_have) {
        if (err == cudaSuccess && ndev > 0)
            printf("[smoke] rank %d: GPU part SKIPPED: %d CUDA device(s) for %d ranks (NCCL needs one per rank; use -np %d)\n",
                   rank, ndev, world, ndev);
        else
            printf("[smoke] rank %d: GPU part SKIPPED: no usable CUDA device (%s)\n", rank,
                   err == cudaSuccess ? "0 devices" : cudaGetErrorString(err));
        MPICHECK(MPI_Finalize());
        return 0;
    }
    int dev = local_rank;
    CUDACHECK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CUDACHECK(cudaGetDeviceProperties(&prop, dev));
    printf("[smoke] rank %d: GPU %d %s sm_%d%d\n", rank, dev, prop.name, prop.major, prop.minor);

    ncclUniqueId id;
    if (rank == 0) NCCLCHECK(ncclGetUniqueId(&id));
    MPICHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD));
    ncclComm_t comm;
    NCCLCHECK(ncclCommInitRank(&comm, world, id, rank));

    const int n = 1 << 20;
    float* buf;
    CUDACHECK(cudaMalloc(&buf, n * sizeof(float)));
    fill<<<(n + 255) / 256, 256>>>(buf, n, (float)(rank + 1));
    CUDACHECK(cudaGetLastError());
    NCCLCHECK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, 0));
    CUDACHECK(cudaStreamSynchronize(0));
    float* host_buf = (float*)malloc(n * sizeof(float));
    CUDACHECK(cudaMemcpy(host_buf, buf, n * sizeof(float), cudaMemcpyDeviceToHost));
    const float want = world * (world + 1) / 2.0f;
    int bad = 0;
    for (int i = 0; i < n; i++) if (host_buf[i] != want) bad++;
    printf("[smoke] rank %d: NCCL allreduce of %d floats: %s (want %.1f, got %.1f)\n", rank, n,
           bad ? "FAILED" : "OK", want, host_buf[0]);
    int all_bad = 0;
    MPICHECK(MPI_Allreduce(&bad, &all_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    free(host_buf);
    cudaFree(buf);
    ncclCommDestroy(comm);
    MPICHECK(MPI_Finalize());
    return all_bad ? 1 : 0;
}
